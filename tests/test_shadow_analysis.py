"""Shadow policy parsing, decisions on paired figures, and reading them from Prometheus.

Prometheus is `tests.prometheus_standin`'s HTTP stand-in, answering the shadow's queries
through the real `PrometheusClient`; the decision loop runs on `tests.fake_clock`.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ctloop.components.canary.prometheus import PrometheusClient, PrometheusError
from ctloop.components.decisions.record import read_record
from ctloop.components.shadow.decision import (
    decide,
    observe_shadow,
    replay_shadow,
    run_shadow_analysis,
)
from ctloop.components.shadow.measurement import ShadowFigures, ShadowTarget, measure, selector
from ctloop.components.shadow.policy import (
    DEFAULT_SHADOW_POLICY,
    ShadowPolicy,
    ShadowPolicyError,
    parse_shadow_policy,
)
from ctloop.components.shadow.report import decision_markdown
from tests.fake_clock import FakeClock
from tests.prometheus_standin import NOW, CannedPrometheus

TARGET = ShadowTarget("churn", shadow_version="3", served_version="2")


def figures(compared=2000.0, disagreements=10.0, errors=0.0, skipped=0.0, mean_abs=0.01):
    higher, lower = compared * 0.6, compared * 0.3
    return ShadowFigures(compared, disagreements, errors, skipped, mean_abs, higher, lower, 0.004)


def policy(**overrides) -> ShadowPolicy:
    return parse_shadow_policy(json.dumps({**DEFAULT_SHADOW_POLICY, **overrides}))


# --- policy ---------------------------------------------------------------------------------


def test_blank_and_empty_policy_are_the_defaults():
    assert parse_shadow_policy("  ") == parse_shadow_policy("{}") == ShadowPolicy()
    assert ShadowPolicy() == parse_shadow_policy(json.dumps(DEFAULT_SHADOW_POLICY))
    assert ShadowPolicy().max_skipped_fraction is None


def test_policy_reads_every_key_and_null_switches_a_check_off():
    parsed = parse_shadow_policy(
        json.dumps(
            {
                "min_rows": 500,
                "max_disagreement_rate": None,
                "max_mean_abs_difference": 0.1,
                "max_error_rate": 0.01,
                "max_skipped_fraction": 0.5,
                "bake_time_s": 0,
                "step_s": 5,
                "inconclusive": "go_on",
            }
        )
    )
    assert parsed == ShadowPolicy(500.0, None, 0.1, 0.01, 0.5, 0.0, 5.0, "go_on")
    assert [c.kind for c in decide(parsed, figures())[1]] == [
        "max_mean_abs_difference",
        "max_error_rate",
        "max_skipped_fraction",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"min_rows": 10,}', "shadow policy is not valid JSON: Expecting property name"),
        ("[1]", "shadow policy must be a JSON object, got [1]"),
        ('{"min_row": 10}', "shadow policy has unknown key(s) ['min_row']; allowed: min_rows"),
        ('{"min_rows": -1}', "shadow policy: 'min_rows' = -1 must be >= 0"),
        ('{"min_rows": null}', "shadow policy: 'min_rows' = null must be a finite number"),
        ('{"max_error_rate": 2}', "shadow policy: 'max_error_rate' = 2 must be >= 0 and <= 1"),
        ('{"max_disagreement_rate": "0.1"}', "'max_disagreement_rate' = \"0.1\" must be a"),
        ('{"step_s": 0}', "shadow policy: 'step_s' = 0 must be >= 0.001"),
        ('{"bake_time_s": true}', "shadow policy: 'bake_time_s' = true must be a finite"),
        ('{"inconclusive": "rollback"}', '\'inconclusive\' = "rollback" must be "reject" or'),
    ],
)
def test_policy_errors_name_the_key_and_value(text, message):
    with pytest.raises(ShadowPolicyError) as raised:
        parse_shadow_policy(text)
    assert message in str(raised.value)


# --- decisions ------------------------------------------------------------------------------


def test_shadow_within_every_bound_goes_on():
    verdict, checks, reasons = decide(policy(), figures())
    assert (verdict, reasons) == ("go_on", [])
    assert [(c.kind, c.subject, c.value, c.threshold, c.passed) for c in checks] == [
        ("max_disagreement_rate", "disagreement_rate", 0.005, 0.02, True),
        ("max_mean_abs_difference", "mean_abs_difference", 0.01, 0.05, True),
        ("max_error_rate", "error_rate", 0.0, 0.0, True),
    ]


@pytest.mark.parametrize(
    ("changed", "overrides", "reason"),
    [
        ({"disagreements": 60.0}, {}, "disagreement_rate 0.03 > max 0.02"),
        ({"mean_abs": 0.08}, {}, "mean_abs_difference 0.08 > max 0.05"),
        ({"errors": 1.0}, {}, "error_rate 0.00049975 > max 0"),
        ({"skipped": 3000.0}, {"max_skipped_fraction": 0.5}, "skipped_fraction 0.6 > max 0.5"),
    ],
)
def test_each_check_out_of_bounds_rejects_the_shadow(changed, overrides, reason):
    verdict, checks, reasons = decide(policy(**overrides), figures(**changed))
    assert (verdict, reasons) == ("reject", [reason])
    assert len([c for c in checks if not c.passed]) == 1


def test_too_few_compared_rows_is_inconclusive_and_rejects_unless_the_policy_says_go_on():
    few = figures(compared=999.0, disagreements=0.0)
    verdict, _checks, reasons = decide(policy(), few)
    assert verdict == "inconclusive"
    assert reasons == ["the shadow compared 999 rows, fewer than min_rows 1000: too few to judge"]
    assert observe_shadow(lambda s, e: few, policy(bake_time_s=0), TARGET).action == "reject"
    lenient = policy(bake_time_s=0, inconclusive="go_on")
    decision = observe_shadow(lambda s, e: few, lenient, TARGET)
    assert (decision.verdict, decision.action, decision.go_on) == ("inconclusive", "go_on", True)


def test_a_bad_figure_on_too_few_rows_waits_for_min_rows():
    verdict, checks, _reasons = decide(policy(), figures(compared=100.0, disagreements=50.0))
    assert verdict == "inconclusive"
    assert not checks[0].passed  # shown failing, but 100 rows decide nothing


def test_no_compared_row_is_inconclusive_even_with_min_rows_zero():
    verdict, checks, _reasons = decide(policy(min_rows=0), figures(compared=0, disagreements=0))
    assert verdict == "inconclusive"
    assert checks[0].rule == (
        "no row compared in the window: the shadow's disagreement_rate is unknown"
    )


def test_a_shadow_failing_every_row_is_rejected_not_inconclusive():
    broken = figures(compared=0.0, disagreements=0.0, errors=5000.0)
    lenient = policy(inconclusive="go_on")
    verdict, _checks, reasons = decide(lenient, broken)
    assert (verdict, reasons) == ("reject", ["error_rate 1 > max 0"])


def test_passing_before_the_bake_time_waits():
    assert decide(policy(), figures(), final=False)[0] == "waiting"
    assert decide(policy(), figures(disagreements=100.0), final=False)[0] == "reject"


def test_observation_reads_every_step_and_goes_on_after_the_bake_time():
    clock, windows = FakeClock(NOW), []

    def read(start, end):
        windows.append((start, end))
        return figures()

    decision = observe_shadow(
        read, policy(bake_time_s=100, step_s=30), TARGET, clock=clock, sleep=clock.sleep
    )
    assert (decision.verdict, decision.go_on) == ("go_on", True)
    assert clock.sleeps == [30, 30, 30, 10]
    assert windows == [(NOW, NOW + t) for t in (30, 60, 90, 100)]


def test_observation_rejects_at_the_first_reading_that_fails():
    clock = FakeClock(NOW)
    readings = iter([figures(), figures(disagreements=200.0)])
    decision = observe_shadow(
        lambda s, e: next(readings), policy(), TARGET, clock=clock, sleep=clock.sleep
    )
    assert (decision.verdict, decision.end - decision.start) == ("reject", 60)


def test_decision_markdown_gives_verdict_reasons_figures_and_checks():
    clock = FakeClock(NOW)
    bad = figures(disagreements=60.0)
    decision = observe_shadow(
        lambda s, e: bad, policy(bake_time_s=0), TARGET, source="http://p:9090", clock=clock
    )
    text = decision_markdown(decision)
    assert text.startswith("## Shadow analysis: REJECT → reject\n")
    assert "shadow version 3 of model churn against served version 2" in text
    assert "- disagreement_rate 0.03 &gt; max 0.02" in text
    assert "| rows compared (both models scored) | 2000 |" in text
    assert "| max_disagreement_rate | disagreement_rate | 0.03 | 0.02 | **FAIL** |" in text


# --- Prometheus -----------------------------------------------------------------------------


class ShadowPrometheus(CannedPrometheus):
    """Answers the shadow's queries for the series of one shadow version: per-second rates of
    each counter and of the signed difference's cumulative buckets, and each other histogram's
    mean (its `_sum` over its `_count`)."""

    def __init__(self, shadow_version: str, rates: dict, buckets: dict, means: dict):
        super().__init__({})
        self.shadow_version, self.rates, self.buckets, self.means = (
            shadow_version,
            rates,
            buckets,
            means,
        )

    def answer(self, path, params):
        if self.fail_with is not None:
            return self.fail_with
        query = params["query"]
        if f'shadow_version="{self.shadow_version}"' not in query:
            return 200, {"status": "success", "data": {"resultType": "vector", "result": []}}
        window_s = int(re.search(r"\[(\d+)ms\]", query)[1]) / 1000
        at = float(params["time"])
        if "_bucket{" in query:
            result = [
                {"metric": {"le": le}, "value": [at, str(rate * window_s)]}
                for le, rate in self.buckets.items()
            ]
        else:
            name = re.search(r"increase\((ctloop_shadow_\w+?)(?:_sum)?\{", query)[1]
            value = self.means[name] if "_sum{" in query else self.rates[name] * window_s
            result = [{"metric": {}, "value": [at, str(value)]}]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prometheus():
    canned = ShadowPrometheus(
        "3",
        rates={
            "ctloop_shadow_rows_compared_total": 20.0,
            "ctloop_shadow_disagreements_total": 0.1,
            "ctloop_shadow_errors_total": 0.0,
            "ctloop_shadow_rows_skipped_total": 0.5,
        },
        # Cumulative: 4 rows a second at or below -0.001, 6 more up to 0.001, 10 above.
        buckets={"-0.01": 1.0, "-0.001": 4.0, "0.001": 10.0, "0.01": 15.0, "+Inf": 20.0},
        means={
            "ctloop_shadow_abs_score_difference": 0.012,
            "ctloop_shadow_latency_seconds": "NaN",  # no batch timed in the window
        },
    )
    yield canned
    canned.stop()


def test_measure_sums_each_counter_mean_and_bucket_over_replicas_in_the_window(prometheus):
    measured = measure(PrometheusClient(prometheus.url), TARGET, NOW - 300, NOW)

    assert measured == ShadowFigures(6000.0, 30.0, 0.0, 150.0, 0.012, 3000.0, 1200.0, None)
    labels = 'model_name="churn",model_version="2",shadow_version="3"'
    assert [q["query"] for q in prometheus.queries] == [
        f"sum(increase(ctloop_shadow_rows_compared_total{{{labels}}}[300000ms]))",
        f"sum(increase(ctloop_shadow_disagreements_total{{{labels}}}[300000ms]))",
        f"sum(increase(ctloop_shadow_errors_total{{{labels}}}[300000ms]))",
        f"sum(increase(ctloop_shadow_rows_skipped_total{{{labels}}}[300000ms]))",
        *(
            f"sum(increase({name}_sum{{{labels}}}[300000ms])) / "
            f"sum(increase({name}_count{{{labels}}}[300000ms]))"
            for name in ("ctloop_shadow_abs_score_difference", "ctloop_shadow_latency_seconds")
        ),
        f"sum by (le) (increase(ctloop_shadow_score_difference_bucket{{{labels}}}[300000ms]))",
    ]
    assert {q["time"] for q in prometheus.queries} == {f"{NOW:.3f}"}


def test_run_shadow_analysis_decides_from_prometheus(prometheus):
    clock = FakeClock(NOW)
    decision = run_shadow_analysis(
        policy(bake_time_s=60, step_s=30),
        TARGET,
        prometheus_url=prometheus.url,
        clock=clock,
        sleep=clock.sleep,
    )
    assert (decision.verdict, decision.go_on, decision.figures.compared) == ("go_on", True, 1200)
    assert decision.source == f"Prometheus {prometheus.url}"


def test_a_version_with_no_series_is_inconclusive(prometheus):
    other = ShadowTarget("churn", shadow_version="4")
    decision = run_shadow_analysis(policy(bake_time_s=0), other, prometheus_url=prometheus.url)
    assert (decision.verdict, decision.action) == ("inconclusive", "reject")
    assert decision.figures == ShadowFigures(0.0, 0.0, 0.0, 0.0, None, None, None, None)


def test_prometheus_errors_name_the_query(prometheus):
    prometheus.fail_with = (400, {"status": "error", "errorType": "bad_data", "error": "parse"})
    with pytest.raises(PrometheusError, match="ctloop_shadow_rows_compared_total.*bad_data"):
        run_shadow_analysis(policy(bake_time_s=0), TARGET, prometheus_url=prometheus.url)


def test_exactly_one_source_is_needed():
    with pytest.raises(ValueError, match="exactly one source"):
        run_shadow_analysis(policy(), TARGET)
    with pytest.raises(ValueError, match="exactly one source"):
        run_shadow_analysis(policy(), TARGET, prometheus_url="http://a", metrics_url="http://b")
    with pytest.raises(ValueError, match="metrics URL 'localhost:8080/metrics' must start"):
        run_shadow_analysis(policy(), TARGET, metrics_url="localhost:8080/metrics")


def test_label_values_are_quoted_and_empty_fields_match_any():
    assert selector(ShadowTarget('a"b\\', "3")) == 'model_name="a\\"b\\\\",shadow_version="3"'
    assert selector(ShadowTarget("m", "3", namespace="prod")) == (
        'model_name="m",shadow_version="3",namespace="prod"'
    )


# --- component ------------------------------------------------------------------------------


def test_analyze_shadow_component_decides_and_writes_the_markdown_artifact(prometheus, tmp_path):
    from ctloop.components.shadow.component import analyze_shadow

    decision = SimpleNamespace(path=str(tmp_path / "decision.md"), metadata={})
    record = SimpleNamespace(path=str(tmp_path / "record.json"), metadata={})

    go_on, verdict = analyze_shadow.python_func(
        shadow_version="3",
        prometheus_url=prometheus.url,
        decision=decision,
        record=record,
        inference_service_name="ctloop-model",
        metrics_model_name="churn",
        policy=json.dumps({"bake_time_s": 0}),
        timeout_s=5,
        served_version="2",
    )

    assert (go_on, verdict) == (False, "inconclusive")  # 0 s of traffic: no row compared
    assert decision.metadata == {"display_name": "Shadow: inconclusive → reject"}
    text = Path(decision.path).read_text()
    assert text.startswith("## Shadow analysis: INCONCLUSIVE → reject")
    assert (
        'model_name="churn",model_version="2",shadow_version="3"' in prometheus.queries[0]["query"]
    )
    kept = read_record(record.path)  # no tracking URI: the artifact only
    assert (kept.kind, kept.outcome) == ("shadow", {"verdict": "inconclusive", "action": "reject"})
    assert kept.policy == json.dumps({"bake_time_s": 0})


def test_analyze_shadow_component_rejects_a_bad_policy_before_any_query(prometheus, tmp_path):
    from ctloop.components.shadow.component import analyze_shadow

    decision = SimpleNamespace(path=str(tmp_path / "decision.md"), metadata={})
    record = SimpleNamespace(path=str(tmp_path / "record.json"), metadata={})
    with pytest.raises(ShadowPolicyError, match="unknown key"):
        analyze_shadow.python_func(
            shadow_version="3",
            prometheus_url=prometheus.url,
            decision=decision,
            record=record,
            policy='{"x": 1}',
        )
    assert prometheus.queries == [] and not Path(decision.path).exists()


# --- command line ---------------------------------------------------------------------------


def test_cli_shadow_analysis_prints_the_decision_and_writes_the_report(
    prometheus, tmp_path, capsys
):
    from ctloop.pipelines.cli import main

    report = tmp_path / "reports" / "shadow.md"
    argv = ["shadow-analysis", "--prometheus-url", prometheus.url, "--shadow-version", "3"]
    argv += ["--model-name", "churn", "--policy", '{"bake_time_s": 0}', "--window-s", "600"]

    assert main([*argv, "--report", str(report)]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert (summary["go_on"], summary["verdict"], summary["reasons"]) == (True, "go_on", [])
    assert summary["figures"]["compared"] == pytest.approx(12000)
    assert summary["report"] == str(report)
    assert report.read_text().startswith("## Shadow analysis: GO_ON → go on to a canary")
    assert "[600000ms]" in prometheus.queries[0]["query"]


def test_cli_shadow_analysis_exits_0_when_it_rejects_and_writes_its_record(
    prometheus, capsys, tmp_path
):
    from ctloop.pipelines.cli import main

    argv = ["shadow-analysis", "--prometheus-url", prometheus.url, "--shadow-version", "3"]
    argv += ["--model-name", "churn", "--window-s", "600"]
    policy = {"bake_time_s": 0, "max_disagreement_rate": 0.001}

    record = tmp_path / "shadow.json"

    assert main([*argv, "--policy", json.dumps(policy), "--record", str(record)]) == 0

    summary = json.loads(capsys.readouterr().out)
    assert (summary["go_on"], summary["verdict"]) == (False, "reject")
    assert summary["reasons"] == ["disagreement_rate 0.005 > max 0.001"]
    kept = read_record(record)
    assert summary["decision_record"] == kept.id
    assert replay_shadow(kept.inputs, kept.policy)[0] == {"verdict": "reject", "action": "reject"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "--prometheus-url needs --shadow-version: whose figures to read"),
        (["--shadow-version", "3", "--policy", '{"min_rows": "x"}'], "'min_rows' = \"x\""),
        (["--shadow-version", "3", "--window-s", "-1"], "--window-s -1 must be >= 0"),
        (["--shadow-version", "3", "--timeout", "0"], "--timeout 0 must be > 0"),
    ],
)
def test_cli_shadow_analysis_bad_input_is_one_line_and_exit_2(options, message, capsys):
    from ctloop.pipelines.cli import main

    assert main(["shadow-analysis", "--prometheus-url", "http://127.0.0.1:9", *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("ctloop shadow-analysis: ") and message in line


def test_cli_shadow_analysis_unreachable_prometheus_exits_1(capsys):
    from ctloop.pipelines.cli import main

    argv = ["shadow-analysis", "--prometheus-url", "http://127.0.0.1:9", "--shadow-version", "3"]
    assert main([*argv, "--policy", '{"bake_time_s": 0}', "--timeout", "2"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ctloop shadow-analysis: Prometheus http://127.0.0.1:9 query ")
    assert "cannot reach http://127.0.0.1:9" in line
