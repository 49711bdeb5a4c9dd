"""Canary analysis on record: every reading pinned, and replayed without Prometheus.

The analysis reads `tests.prometheus_standin` through the real client; the record is written
and read back as a file before it is replayed, so replay sees what a stored record holds.
"""

import json

import pytest

from ctloop.components.canary.decision import canary_record, observe_canary, replay_canary
from ctloop.components.canary.policy import (
    DEFAULT_CANARY_POLICY,
    CanaryPolicyError,
    parse_canary_policy,
)
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.decisions.record import DecisionRecordError, read_record, write_record
from tests.fake_clock import FakeClock
from tests.prometheus_standin import NOW, CannedPrometheus, version_figures
from tests.test_canary_analysis import TARGET


@pytest.fixture
def prometheus():
    canned = CannedPrometheus({"1": version_figures(), "2": version_figures()})
    yield canned
    canned.stop()


def policy_text(**overrides) -> str:
    return json.dumps({**DEFAULT_CANARY_POLICY, **overrides})


def recorded(prometheus, text: str, tmp_path):
    """Observe the canary under the policy `text`, and its record as read back from a file."""
    clock = FakeClock(NOW)
    decision = observe_canary(
        PrometheusClient(prometheus.url),
        parse_canary_policy(text),
        TARGET,
        clock=clock,
        sleep=clock.sleep,
    )
    record = canary_record(
        decision,
        version="2",
        champion="1",
        serving_canary="2",
        policy_text=text,
        registered_model="churn",
        kfp_run_id="run-7",
    )
    write_record(record, tmp_path / "canary.json")
    return decision, read_record(tmp_path / "canary.json")


def test_a_promoted_canary_replays_to_promote_from_the_pinned_readings_alone(prometheus, tmp_path):
    text = policy_text(bake_time_s=100, step_s=30)
    decision, record = recorded(prometheus, text, tmp_path)
    prometheus.stop()  # replay must not need it

    assert record.outcome == {"verdict": "promote", "action": "promote"}
    assert record.subject == {
        "registered_model": "churn",
        "model_version": "2",
        "run_id": None,
        "kfp_run_id": "run-7",
    }
    assert replay_canary(record.inputs, record.policy) == (record.outcome, record.reasons)
    assert record.reasons[0] == "promote: every check passed at the end of the bake time"
    assert "error_rate 0 <= primary's + 0.01 0.01" in record.reasons


def test_the_record_holds_each_readings_figures_with_its_time_not_where_to_read_them(
    prometheus, tmp_path
):
    _decision, record = recorded(prometheus, policy_text(bake_time_s=100, step_s=30), tmp_path)

    readings = record.inputs["readings"]
    assert [reading["end"] - record.inputs["start"] for reading in readings] == [30, 60, 90, 100]
    last = readings[-1]
    # 10 ok requests a second for 100 s; p99 8 ms; the score histogram's 21 bucket counts.
    assert last["canary"]["requests"] == pytest.approx(1000)
    assert last["primary"]["p99_ms"] == pytest.approx(8.0)
    assert len(last["canary"]["score_counts"]) == 21
    assert sum(last["canary"]["score_counts"]) == pytest.approx(1000 * 50)
    assert record.inputs["target"]["primary_version"] == "1"
    assert prometheus.url not in json.dumps(record.inputs)


def test_a_stricter_policy_rolls_the_same_readings_back(prometheus, tmp_path):
    _decision, record = recorded(prometheus, policy_text(bake_time_s=100, step_s=30), tmp_path)

    strict = policy_text(bake_time_s=100, step_s=30, latency_p99_ms={"max": 5})
    outcome, reasons = replay_canary(record.inputs, strict)

    assert outcome == {"verdict": "rollback", "action": "rollback"}
    assert reasons == ["p99_ms 8 ms > max 5 ms"]


def test_a_longer_bake_time_than_the_readings_cover_is_still_waiting(prometheus, tmp_path):
    _decision, record = recorded(prometheus, policy_text(bake_time_s=100, step_s=30), tmp_path)

    outcome, reasons = replay_canary(record.inputs, policy_text(bake_time_s=600))

    assert outcome == {"verdict": "waiting", "action": "waiting"}
    assert "before the bake time of 600 s" in reasons[0]


def test_an_inconclusive_canary_follows_the_replaying_policys_choice(prometheus, tmp_path):
    text = policy_text(bake_time_s=0, min_requests=1e9)
    _decision, record = recorded(prometheus, text, tmp_path)
    assert record.outcome == {"verdict": "inconclusive", "action": "rollback"}
    assert replay_canary(record.inputs, record.policy)[0] == record.outcome

    lenient = policy_text(bake_time_s=0, min_requests=1e9, inconclusive="promote")
    assert replay_canary(record.inputs, lenient)[0] == {
        "verdict": "inconclusive",
        "action": "promote",
    }


def test_a_rolled_back_canary_replays_to_rollback(prometheus, tmp_path):
    prometheus.figures["2"] = version_figures(error=1.0)
    _decision, record = recorded(prometheus, policy_text(min_requests=500), tmp_path)

    assert record.outcome == {"verdict": "rollback", "action": "rollback"}
    assert len(record.inputs["readings"]) == 2  # decided at the second reading
    assert replay_canary(record.inputs, record.policy) == (record.outcome, record.reasons)


def test_a_version_already_the_champion_is_on_record_and_replays_to_promote(tmp_path):
    record = canary_record(None, version="1", champion="1", serving_canary=None, policy_text="")
    write_record(record, tmp_path / "r.json")
    record = read_record(tmp_path / "r.json")

    assert record.outcome == {"verdict": "champion", "action": "promote"}
    assert record.inputs["readings"] == []
    assert replay_canary(record.inputs, "") == (record.outcome, record.reasons)


def test_replay_names_a_missing_input_and_a_bad_policy(prometheus, tmp_path):
    _decision, record = recorded(prometheus, policy_text(bake_time_s=0), tmp_path)
    broken = {**record.inputs, "readings": [{"end": NOW, "canary": {}}]}

    with pytest.raises(DecisionRecordError, match="canary record: an input is missing"):
        replay_canary(broken, "")
    with pytest.raises(CanaryPolicyError, match="'bake'"):
        replay_canary(record.inputs, '{"bake": 1}')
