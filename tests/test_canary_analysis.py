"""Canary policy parsing and decisions, on canned Prometheus answers served over HTTP.

The answers come from `tests.prometheus_standin`, through the real `PrometheusClient`.
"""

import json
import re

import pytest

from ctloop.components.canary.decision import CanaryDecision, analyze_window, observe_canary
from ctloop.components.canary.measurement import TOTALS_QUERY, CanaryTarget, selector, timeline
from ctloop.components.canary.policy import (
    DEFAULT_CANARY_POLICY,
    CanaryPolicy,
    CanaryPolicyError,
    ErrorRateRule,
    LatencyRule,
    ScoreShiftRule,
    parse_canary_policy,
)
from ctloop.components.canary.prometheus import PrometheusClient, PrometheusError, Sample
from ctloop.components.canary.report import decision_markdown
from tests.fake_clock import FakeClock
from tests.prometheus_standin import NOW, SHARES, CannedPrometheus, version_figures

TARGET = CanaryTarget("churn", canary_version="2", primary_version="1")


@pytest.fixture
def prometheus():
    canned = CannedPrometheus({"1": version_figures(), "2": version_figures()})
    yield canned
    canned.stop()


def policy(**overrides) -> CanaryPolicy:
    return parse_canary_policy(json.dumps({**DEFAULT_CANARY_POLICY, **overrides}))


def decide(prometheus, canary_policy, window_s=300.0) -> CanaryDecision:
    client = PrometheusClient(prometheus.url)
    return analyze_window(client, canary_policy, TARGET, NOW - window_s, NOW)


def failed(decision) -> list[tuple[str, str]]:
    return [(c.kind, c.subject) for c in decision.checks if not c.passed]


# --- policy ---------------------------------------------------------------------------------


def test_blank_policy_is_the_default_and_every_key_is_optional():
    assert parse_canary_policy("  ") == parse_canary_policy(json.dumps(DEFAULT_CANARY_POLICY))
    empty = parse_canary_policy("{}")
    assert (empty.bake_time_s, empty.step_s, empty.min_requests) == (300.0, 30.0, 100.0)
    assert (empty.error_rate, empty.latency_p99_ms, empty.score_shift) == (None, None, None)
    assert empty.inconclusive == "rollback"


def test_policy_reads_every_section():
    parsed = parse_canary_policy(
        json.dumps(
            {
                "bake_time_s": 600,
                "step_s": 15,
                "min_requests": 500,
                "inconclusive": "promote",
                "error_rate": {"max": 0.05, "max_increase": 0.01},
                "latency_p99_ms": {"max": 250, "max_increase_relative": 0.5},
                "score_shift": {"psi_max": 0.2, "ks_max": 0.1, "false_alarm_rate": 0.01},
            }
        )
    )
    assert parsed == CanaryPolicy(
        bake_time_s=600.0,
        step_s=15.0,
        min_requests=500.0,
        inconclusive="promote",
        error_rate=ErrorRateRule(max=0.05, max_increase=0.01),
        latency_p99_ms=LatencyRule(max=250.0, max_increase_relative=0.5),
        score_shift=ScoreShiftRule(psi_max=0.2, ks_max=0.1, false_alarm_rate=0.01),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"bake_time_s": 60,}', "canary policy is not valid JSON: Expecting property name"),
        ("[1]", "canary policy must be a JSON object, got [1]"),
        ('{"bake": 60}', "canary policy has unknown key(s) ['bake']; allowed: bake_time_s"),
        ('{"step_s": 0}', "canary policy: 'step_s' = 0 must be >= 0.001"),
        ('{"min_requests": "100"}', "canary policy: 'min_requests' = \"100\" must be a finite"),
        ('{"inconclusive": "wait"}', '\'inconclusive\' = "wait" must be "rollback" or'),
        ('{"error_rate": 0.01}', "'error_rate' must be a JSON object, got 0.01"),
        ('{"error_rate": {"max": 1.5}}', "error_rate: 'max' = 1.5 must be >= 0 and <= 1"),
        ('{"error_rate": {"maximum": 0.1}}', "'error_rate' has unknown key(s) ['maximum']"),
        ('{"latency_p99_ms": {"max": true}}', "latency_p99_ms: 'max' = true must be a finite"),
        ('{"score_shift": {"false_alarm_rate": 0.01}}', "'score_shift' needs at least one of"),
    ],
)
def test_policy_errors_name_the_key_value_and_rule(text, message):
    with pytest.raises(CanaryPolicyError) as raised:
        parse_canary_policy(text)
    assert message in str(raised.value)


# --- decisions ------------------------------------------------------------------------------


def test_healthy_canary_is_promoted_with_every_check_passed(prometheus):
    decision = decide(prometheus, policy())

    assert (decision.verdict, decision.action) == ("promote", "promote")
    assert decision.reasons == [] and failed(decision) == []
    assert [(c.kind, c.subject) for c in decision.checks] == [
        ("error_rate", "error_rate"),
        ("latency_p99_ms", "p99_ms"),
        ("score_shift", "psi"),
    ]
    assert decision.canary.requests == pytest.approx(3000)
    assert decision.canary.p99_ms == pytest.approx(8.0)
    # Each query covers the window and is evaluated at its end.
    instant = [q for q in prometheus.queries if q["path"] == "/api/v1/query"]
    assert {q["time"] for q in instant} == {f"{NOW:.3f}"}
    assert all("[300000ms]" in q["query"] for q in instant)


def test_canary_rejecting_requests_the_primary_scores_is_rolled_back(prometheus):
    prometheus.figures["2"] = version_figures(ok=9.0, invalid=1.0)

    decision = decide(prometheus, policy())

    assert (decision.verdict, decision.action) == ("rollback", "rollback")
    [check] = [c for c in decision.checks if not c.passed]
    assert (check.kind, check.value, check.baseline) == ("error_rate", 0.1, 0.0)
    assert check.threshold == pytest.approx(0.01)
    assert decision.reasons == ["error_rate 0.1 > primary's + 0.01 0.01"]


def test_bad_requests_rejected_by_both_versions_do_not_fail_the_canary(prometheus):
    prometheus.figures = {
        "1": version_figures(ok=9.0, invalid=1.0),
        "2": version_figures(ok=9.0, invalid=1.0, error=0.02),
    }
    decision = decide(prometheus, policy(error_rate={"max_increase": 0.01}))
    assert decision.verdict == "promote"

    strict = decide(prometheus, policy(error_rate={"max": 0.05, "max_increase": 0.01}))
    assert strict.verdict == "rollback" and failed(strict) == [("error_rate", "error_rate")]
    assert strict.reasons == ["error_rate 0.101796 > max 0.05"]  # 1.02 of 10.02 a second


def test_slow_canary_fails_absolute_and_relative_latency_limits(prometheus):
    prometheus.figures["2"] = version_figures(p99_s=0.030)

    relative = decide(prometheus, policy(latency_p99_ms={"max_increase_relative": 0.5}))
    absolute = decide(prometheus, policy(latency_p99_ms={"max": 25}))
    lenient = decide(prometheus, policy(latency_p99_ms={"max": 50, "max_increase_relative": 3}))

    assert relative.verdict == absolute.verdict == "rollback"
    assert relative.reasons == ["p99_ms 30 ms > primary's x 1.5 12 ms"]
    assert absolute.reasons == ["p99_ms 30 ms > max 25 ms"]
    assert lenient.verdict == "promote"


def test_shifted_score_distribution_is_rolled_back(prometheus):
    prometheus.figures["2"] = version_figures(shares=SHARES[::-1] + 1)

    decision = decide(prometheus, policy(score_shift={"psi_max": 0.2, "ks_max": 0.1}))

    assert decision.verdict == "rollback"
    assert failed(decision) == [("score_shift", "psi"), ("score_shift", "ks")]
    psi = decision.checks[-2]
    assert psi.value > 1.0 and psi.threshold == 0.2
    assert psi.rule.startswith("score psi ") and "150000 canary and 150000 primary" in psi.rule


def test_small_samples_use_the_noise_bound_not_the_effect_threshold(prometheus):
    # 5 requests x 2 rows: a mild shift is within sampling noise at 10 scores.
    prometheus.figures["2"] = version_figures(shares=SHARES + 3, ok=1.0, rows=2)
    few = decide(prometheus, policy(min_requests=1, score_shift={"psi_max": 0.05}), 5.0)
    [check] = [c for c in few.checks if c.kind == "score_shift"]
    assert check.passed and check.threshold > 0.05
    assert "(small-sample noise bound)" in check.rule

    prometheus.figures["2"] = version_figures(shares=SHARES + 3, ok=10.0, rows=500)
    many = decide(prometheus, policy(score_shift={"psi_max": 0.05}))
    [check] = [c for c in many.checks if c.kind == "score_shift"]
    assert not check.passed and check.threshold == 0.05


def test_too_few_requests_is_inconclusive_and_rolls_back_unless_the_policy_says_promote(
    prometheus,
):
    prometheus.figures["2"] = version_figures(ok=0.1)

    decision = decide(prometheus, policy(min_requests=100), window_s=300)
    lenient = decide(prometheus, policy(min_requests=100, inconclusive="promote"), 300)

    assert (decision.verdict, decision.action) == ("inconclusive", "rollback")
    assert decision.reasons == [
        "the canary served 30 requests in 300 s, fewer than min_requests 100: too few to judge"
    ]
    assert (lenient.verdict, lenient.action) == ("inconclusive", "promote")


def test_canary_without_any_request_is_inconclusive_even_with_min_requests_zero(prometheus):
    del prometheus.figures["2"]
    decision = decide(prometheus, policy(min_requests=0))
    assert decision.verdict == "inconclusive" and decision.canary.requests == 0


def test_relative_checks_are_skipped_when_the_primary_served_nothing(prometheus):
    del prometheus.figures["1"]

    decision = decide(prometheus, policy())

    assert decision.verdict == "promote"
    assert all(check.skipped for check in decision.checks)
    assert decision.checks[0].rule == (
        "skipped (primary's + 0.01): the primary served nothing to compare with"
    )


def test_canary_that_never_succeeds_fails_latency_and_score_checks_instead_of_skipping(
    prometheus,
):
    prometheus.figures["2"] = version_figures(ok=0.0, error=10.0)

    decision = decide(prometheus, policy(error_rate={"max": 1.0}))

    assert decision.verdict == "rollback"
    assert failed(decision) == [("latency_p99_ms", "p99_ms"), ("score_shift", "psi")]
    assert decision.reasons == [
        "no successful canary request in the window: its p99 latency is unknown",
        "the canary scored nothing in the window: its score shift is unknown",
    ]


def test_decision_markdown_gives_verdict_reasons_checks_and_timeline(prometheus):
    prometheus.figures["2"] = version_figures(ok=9.0, invalid=1.0)

    text = decision_markdown(decide(prometheus, policy(step_s=60)))

    assert text.startswith("## Canary analysis: ROLLBACK → rollback\n")
    assert "canary version **2** against primary version **1**, 300 s" in text
    assert "- error_rate 0.1 > primary's + 0.01 0.01" in text
    assert "| canary (2) | 3000 | 300 | 0.1 | 8 ms |" in text
    assert "| error_rate | error_rate | 0.1 | 0 | 0.01 | **FAIL** |" in text
    # A row per 60 s step: each interval's requests and error rate of both versions.
    timeline = [line for line in text.splitlines() if line.startswith("| 2023-11-14 ")]
    assert len(timeline) == 5
    assert timeline[0].endswith("| 600 | 0.1 | 600 | 0 |")


# --- the observation loop -------------------------------------------------------------------


def windows(prometheus) -> list[str]:
    return [
        re.search(r"\[(\d+)ms\]", q["query"])[1]
        for q in prometheus.queries
        if q["path"] == "/api/v1/query" and "ctloop_predictions_total" in q["query"]
    ]


def test_observation_checks_every_step_and_promotes_after_the_bake_time(prometheus):
    clock = FakeClock(NOW)
    client = PrometheusClient(prometheus.url)

    decision = observe_canary(
        client,
        policy(bake_time_s=100, step_s=30),
        TARGET,
        clock=clock,
        sleep=clock.sleep,
    )

    assert decision.verdict == "promote"
    assert clock.sleeps == [30, 30, 30, 10]
    # canary and primary at each check, the window growing from the start.
    assert windows(prometheus) == [w for w in ("30000", "60000", "90000", "100000") for _ in "cp"]


def test_observation_rolls_back_at_the_first_failing_check(prometheus):
    prometheus.figures["2"] = version_figures(error=1.0)
    clock = FakeClock(NOW)

    decision = observe_canary(
        PrometheusClient(prometheus.url),
        policy(bake_time_s=300, step_s=30, min_requests=500),
        TARGET,
        clock=clock,
        sleep=clock.sleep,
    )

    # 11 requests/s: the canary reaches min_requests 500 at the second check (660).
    assert decision.verdict == "rollback" and clock.sleeps == [30, 30]
    assert decision.end - decision.start == 60


def test_observation_started_long_ago_decides_at_once_on_the_whole_window(prometheus):
    clock = FakeClock(NOW)

    decision = observe_canary(
        PrometheusClient(prometheus.url),
        policy(bake_time_s=60, step_s=10),
        TARGET,
        started_at=NOW - 600,
        clock=clock,
        sleep=clock.sleep,
    )

    assert decision.verdict == "promote" and clock.sleeps == []
    assert windows(prometheus) == ["600000", "600000"]


# --- the Prometheus client ------------------------------------------------------------------


def test_prometheus_errors_name_the_query_and_prometheus_message(prometheus):
    prometheus.fail_with = (
        400,
        {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'},
    )
    client = PrometheusClient(prometheus.url)

    with pytest.raises(PrometheusError) as raised:
        client.query("sum(rate(x[1m])})")

    assert str(raised.value) == (
        f"Prometheus {prometheus.url} query 'sum(rate(x[1m])}})' failed: "
        'bad_data: parse error: unexpected "}"'
    )


def test_prometheus_unreachable_names_the_url_and_query():
    client = PrometheusClient("http://127.0.0.1:9", timeout_s=2)
    with pytest.raises(PrometheusError, match=r"query 'up': cannot reach http://127.0.0.1:9"):
        client.query("up")


def test_prometheus_range_query_returns_each_series_points(prometheus):
    client = PrometheusClient(prometheus.url)
    query = TOTALS_QUERY % selector(CanaryTarget("churn", "2", "1"), "1")

    [sample] = client.query_range(query, NOW - 30, NOW, 10)

    assert sample.labels == {"outcome": "ok"}
    assert sample.points == [
        (NOW - 30, 35700.0),
        (NOW - 20, 35800.0),
        (NOW - 10, 35900.0),
        (NOW, 36000.0),
    ]
    assert prometheus.queries[-1]["step"] == "10"


def test_label_values_are_quoted_for_promql():
    target = CanaryTarget('a"b', "2", "1")
    assert selector(target, "c\\d") == 'model_name="a\\"b",model_version="c\\\\d"'


def test_a_namespace_narrows_every_query_to_its_predictors():
    target = CanaryTarget("churn", "2", "1", namespace="ctloop-prod")
    assert selector(target, "2") == ('model_name="churn",model_version="2",namespace="ctloop-prod"')


class RangeOnly:
    """Answers `query_range` with given raw-counter series per version."""

    def __init__(self, series: dict[str, list[Sample]]):
        self.series = series

    def query_range(self, promql, start, end, step_s):
        return self.series.get(re.search(r'model_version="([^"]*)"', promql)[1], [])


def test_timeline_counts_each_interval_across_a_restart_and_a_late_series():
    start = NOW - 180
    ok = Sample({"outcome": "ok"}, [(start, 100), (start + 60, 160), (start + 120, 10)])
    ok.points.append((start + 180, 40))  # the canary restarted before start + 120
    invalid = Sample({"outcome": "invalid"}, [(start + 120, 5), (start + 180, 5)])

    rows = timeline(RangeOnly({"2": [ok, invalid]}), TARGET, start, NOW, 60)

    assert [
        (row["time"] - start, row["canary_requests"], row["canary_failed"]) for row in rows
    ] == [(60, 60, 0), (120, 15, 5), (180, 30, 0)]
    assert all("primary_requests" not in row for row in rows)
