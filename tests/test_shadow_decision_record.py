"""Shadow analysis on record: every reading's figures pinned, and replayed without a source.

Records are written and read back as files before they are replayed, so replay sees what a
stored record holds.
"""

import json

import pytest

from ctloop.components.decisions.record import DecisionRecordError, read_record, write_record
from ctloop.components.shadow.decision import observe_shadow, replay_shadow, shadow_record
from ctloop.components.shadow.policy import DEFAULT_SHADOW_POLICY, parse_shadow_policy
from tests.fake_clock import FakeClock
from tests.prometheus_standin import NOW
from tests.test_shadow_analysis import TARGET, figures


def policy_text(**overrides) -> str:
    return json.dumps({**DEFAULT_SHADOW_POLICY, **overrides})


def recorded(readings, text: str, tmp_path):
    """Observe a shadow whose readings are `readings` in turn; its record as read back."""
    clock = FakeClock(NOW)
    figures_read = iter(readings)
    decision = observe_shadow(
        lambda start, end: next(figures_read),
        parse_shadow_policy(text),
        TARGET,
        source="Prometheus http://prometheus:9090",
        clock=clock,
        sleep=clock.sleep,
    )
    record = shadow_record(decision, policy_text=text, registered_model="churn", kfp_run_id="r1")
    write_record(record, tmp_path / "shadow.json")
    return read_record(tmp_path / "shadow.json")


def test_a_shadow_that_went_on_replays_to_go_on_and_pins_every_reading(tmp_path):
    text = policy_text(bake_time_s=60, step_s=30)
    record = recorded([figures(compared=1500.0), figures()], text, tmp_path)

    assert record.outcome == {"verdict": "go_on", "action": "go_on"}
    assert record.subject["model_version"] == "3"
    assert replay_shadow(record.inputs, record.policy) == (record.outcome, record.reasons)
    first, last = record.inputs["readings"]
    assert (first["end"] - record.inputs["start"], last["end"] - record.inputs["start"]) == (30, 60)
    assert first["figures"]["compared"] == 1500.0
    assert last["figures"] == {
        "compared": 2000.0,
        "disagreements": 10.0,
        "errors": 0.0,
        "skipped": 0.0,
        "mean_abs_difference": 0.01,
        "scored_higher": 1200.0,
        "scored_lower": 600.0,
        "mean_latency_s": 0.004,
    }


def test_a_stricter_policy_rejects_the_same_readings_at_the_first_that_fails_it(tmp_path):
    record = recorded(
        [figures(compared=1500.0), figures()], policy_text(bake_time_s=60, step_s=30), tmp_path
    )

    outcome, reasons = replay_shadow(
        record.inputs, policy_text(bake_time_s=60, max_mean_abs_difference=0.005)
    )

    assert outcome == {"verdict": "reject", "action": "reject"}
    assert reasons == ["mean_abs_difference 0.01 > max 0.005"]


def test_a_rejected_shadow_replays_to_reject_and_a_lenient_policy_lets_it_go_on(tmp_path):
    record = recorded([figures(disagreements=200.0)], policy_text(bake_time_s=0), tmp_path)
    assert record.outcome == {"verdict": "reject", "action": "reject"}
    assert replay_shadow(record.inputs, record.policy) == (record.outcome, record.reasons)

    lenient = policy_text(bake_time_s=0, max_disagreement_rate=0.2)
    assert replay_shadow(record.inputs, lenient)[0] == {"verdict": "go_on", "action": "go_on"}


def test_a_longer_bake_time_than_the_readings_cover_is_still_waiting(tmp_path):
    record = recorded([figures()], policy_text(bake_time_s=0), tmp_path)

    outcome, reasons = replay_shadow(record.inputs, policy_text(bake_time_s=600))

    assert outcome == {"verdict": "waiting", "action": "waiting"}
    assert "before the bake time of 600 s" in reasons[0]


def test_replay_names_a_malformed_reading():
    inputs = {"start": NOW, "readings": [{"end": NOW, "figures": {"compared": 1.0}}]}
    with pytest.raises(DecisionRecordError, match="shadow record: an input is missing"):
        replay_shadow(inputs, "")
