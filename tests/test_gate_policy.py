import json

import pytest

from ctloop.components.gate.decision import decision_markdown, evaluate_gate, run_gate
from ctloop.components.gate.policy import (
    DEFAULT_GATE_POLICY,
    Bounds,
    ChampionRule,
    GatePolicyError,
    LatencyRule,
    parse_gate_policy,
)

POLICY = parse_gate_policy(
    json.dumps(
        {
            "thresholds": {"roc_auc": {"min": 0.7}, "log_loss": {"max": 0.6}},
            "champion_comparison": {
                "roc_auc": {"direction": "higher", "max_regression": 0.01},
                "log_loss": {"direction": "lower", "max_regression": 0.02},
            },
            "latency": {"max_ratio_to_champion": 1.5, "median_ms_max": 50.0},
        }
    )
)
GOOD = {"roc_auc": 0.82, "log_loss": 0.45}


def _timed(candidate_ms: float, champion_ms: float | None) -> dict:
    """An evaluation's latency section: medians of the two models timed interleaved."""
    champion = None if champion_ms is None else {"median_ms": champion_ms, "min_ms": champion_ms}
    return {"candidate": {"median_ms": candidate_ms, "min_ms": candidate_ms}, "champion": champion}


FAST = _timed(3.0, 2.5)


def _failed(decision):
    return [(f.kind, f.subject) for f in decision.failures]


def test_policy_parses_into_typed_rules():
    assert POLICY.thresholds == {"roc_auc": Bounds(min=0.7), "log_loss": Bounds(max=0.6)}
    assert POLICY.champion_comparison["roc_auc"] == ChampionRule("higher", max_regression=0.01)
    assert POLICY.latency == LatencyRule(max_ratio_to_champion=1.5, median_ms_max=50.0)


def test_every_section_is_optional():
    policy = parse_gate_policy("{}")
    decision = evaluate_gate(policy, GOOD, None, None)
    assert decision.passed
    assert decision.checks == []


def test_gate_passes_good_candidate_against_worse_champion():
    decision = evaluate_gate(POLICY, GOOD, {"roc_auc": 0.80, "log_loss": 0.5}, FAST)
    assert decision.passed
    assert decision.failures == []
    assert decision.champion_compared
    assert len(decision.checks) == 6
    assert all(check.passed and not check.skipped for check in decision.checks)


def test_gate_rejects_candidate_below_floor():
    decision = evaluate_gate(POLICY, {"roc_auc": 0.612, "log_loss": 0.45}, None, FAST)
    assert not decision.passed
    [failure] = decision.failures
    assert failure.kind == "threshold"
    assert failure.subject == "roc_auc"
    assert failure.value == 0.612
    assert failure.threshold == 0.7
    assert failure.rule == "roc_auc 0.612 < min 0.7"


def test_gate_rejects_candidate_above_ceiling():
    decision = evaluate_gate(POLICY, {"roc_auc": 0.8, "log_loss": 0.65}, None, FAST)
    assert _failed(decision) == [("threshold", "log_loss")]
    assert decision.failures[0].rule == "log_loss 0.65 > max 0.6"


def test_gate_rejects_candidate_worse_than_champion():
    decision = evaluate_gate(POLICY, GOOD, {"roc_auc": 0.84, "log_loss": 0.44}, FAST)
    assert _failed(decision) == [("champion_comparison", "roc_auc")]
    failure = decision.failures[0]
    assert failure.value == 0.82
    assert failure.threshold == pytest.approx(0.83)
    assert "roc_auc 0.82 is 0.02 worse than champion 0.84 (allowed 0.01" in failure.rule


def test_gate_rejects_lower_is_better_metric_rising_beyond_tolerance():
    decision = evaluate_gate(POLICY, GOOD, {"roc_auc": 0.8, "log_loss": 0.42}, FAST)
    assert _failed(decision) == [("champion_comparison", "log_loss")]
    assert decision.failures[0].threshold == pytest.approx(0.44)


def test_gate_passes_regression_within_tolerance_including_the_exact_limit():
    within = evaluate_gate(POLICY, GOOD, {"roc_auc": 0.825, "log_loss": 0.44}, FAST)
    assert within.passed
    at_limit = evaluate_gate(POLICY, {"roc_auc": 0.795, "log_loss": 0.45}, {"roc_auc": 0.805}, FAST)
    assert [c.passed for c in at_limit.checks if c.subject == "roc_auc"] == [True, True]


def test_relative_tolerance_scales_with_champion_value():
    policy = parse_gate_policy(
        '{"champion_comparison": {"rmse": {"direction": "lower", "max_regression_relative": 0.02}}}'
    )
    assert evaluate_gate(policy, {"rmse": 10.15}, {"rmse": 10.0}, None).passed
    decision = evaluate_gate(policy, {"rmse": 10.25}, {"rmse": 10.0}, None)
    assert _failed(decision) == [("champion_comparison", "rmse")]
    assert decision.failures[0].threshold == pytest.approx(10.2)


def test_both_tolerances_must_hold_when_both_are_given():
    policy = parse_gate_policy(
        '{"champion_comparison": {"auc": {"direction": "higher", "max_regression": 0.05,'
        ' "max_regression_relative": 0.01}}}'
    )
    assert not evaluate_gate(policy, {"auc": 0.78}, {"auc": 0.8}, None).passed
    assert evaluate_gate(policy, {"auc": 0.795}, {"auc": 0.8}, None).passed


def test_comparison_is_skipped_and_recorded_without_champion():
    decision = evaluate_gate(POLICY, GOOD, None, _timed(3.0, None))
    assert decision.passed
    assert not decision.champion_compared
    skipped = [c for c in decision.checks if c.skipped]
    assert [(c.kind, c.subject, c.rule) for c in skipped] == [
        ("champion_comparison", "roc_auc", "skipped: no champion yet"),
        ("champion_comparison", "log_loss", "skipped: no champion yet"),
        ("latency", "median_ms_vs_champion", "skipped: no champion timed beside the candidate"),
    ]


def test_metric_missing_from_candidate_fails():
    decision = evaluate_gate(POLICY, {"roc_auc": 0.82}, {"roc_auc": 0.8, "log_loss": 0.5}, FAST)
    assert _failed(decision) == [("threshold", "log_loss"), ("champion_comparison", "log_loss")]
    assert decision.failures[0].rule == "log_loss is missing in the candidate's metrics (max 0.6)"


def test_metric_missing_from_champion_is_skipped_not_failed():
    decision = evaluate_gate(POLICY, GOOD, {"roc_auc": 0.8}, FAST)
    assert decision.passed
    [skipped] = [c for c in decision.checks if c.skipped]
    assert skipped.rule == "skipped: champion has no log_loss to compare with"


def test_gate_rejects_candidate_slower_than_the_ratio_to_the_champion_timed_beside_it():
    decision = evaluate_gate(POLICY, GOOD, None, _timed(4.0, 2.5))
    assert _failed(decision) == [("latency", "median_ms_vs_champion")]
    failure = decision.failures[0]
    assert (failure.value, failure.threshold, failure.baseline) == (4.0, 3.75, 2.5)
    assert failure.rule == "median_ms 4 ms > champion's 2.5 ms x 1.5 = 3.75 ms"


def test_a_busy_node_slowing_both_models_alike_does_not_fail_the_candidate():
    # The first model's figure (102.5 ms) that a fixed 100 ms budget refused on shared CPUs.
    default = parse_gate_policy("", "binary")
    assert evaluate_gate(default, GOOD, None, _timed(102.5, 90.0)).passed
    assert evaluate_gate(default, GOOD, None, _timed(102.5, None)).passed


def test_latency_against_the_champion_is_skipped_and_said_so_without_one():
    decision = evaluate_gate(parse_gate_policy("", "binary"), GOOD, None, _timed(102.5, None))
    [latency] = [c for c in decision.checks if c.kind == "latency"]
    assert latency.skipped and latency.passed
    assert latency.rule == "skipped: no champion timed beside the candidate"


def test_absolute_budget_applies_only_when_the_policy_sets_one():
    decision = evaluate_gate(POLICY, GOOD, None, _timed(60.5, 50.0))
    assert _failed(decision) == [("latency", "median_ms")]
    assert decision.failures[0].rule == "median_ms 60.5 ms > max 50 ms"


def test_gate_rejects_candidate_without_latency_measurement():
    decision = evaluate_gate(POLICY, GOOD, None, None)
    assert _failed(decision) == [("latency", "median_ms")]
    assert decision.failures[0].rule == (
        "the candidate's median scoring time is missing in the evaluation"
    )


def test_an_evaluation_timed_the_old_way_fails_the_latency_rule_instead_of_passing():
    decision = evaluate_gate(POLICY, GOOD, None, {"p50_ms": 3.0, "p95_ms": 5.0})
    assert _failed(decision) == [("latency", "median_ms")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"thresholds": ', "gate policy is not valid JSON: Expecting value at line 1 column 16"),
        ("[]", "gate policy must be a JSON object, got []"),
        (
            '{"slicing": {}}',
            "gate policy has unknown key(s) ['slicing']; allowed: thresholds, "
            "champion_comparison, latency, slices",
        ),
        ('{"thresholds": []}', "'thresholds' must be a JSON object, got []"),
        ('{"thresholds": {"auc": 0.7}}', "thresholds.auc must be a JSON object, got 0.7"),
        ('{"thresholds": {"auc": {"minimum": 0.7}}}', "thresholds.auc has unknown key(s)"),
        ('{"thresholds": {"auc": {}}}', "thresholds.auc needs 'min' or 'max'"),
        ('{"thresholds": {"auc": {"min": 0.9, "max": 0.8}}}', "min 0.9 is greater than max 0.8"),
        ('{"thresholds": {"auc": {"min": "0.7"}}}', "'min' = \"0.7\" must be a finite number"),
        ('{"thresholds": {"auc": {"min": true}}}', "'min' = true must be a finite number"),
        ('{"thresholds": {"auc": {"min": NaN}}}', "'min' = NaN must be a finite number"),
        (
            '{"champion_comparison": {"auc": {"direction": "up"}}}',
            'champion_comparison.auc: \'direction\' = "up" must be "higher" or "lower"',
        ),
        (
            '{"champion_comparison": {"auc": {"max_regression": 0.1}}}',
            "'direction' = null must be",
        ),
        (
            '{"champion_comparison": {"auc": {"direction": "higher", "max_regression": -0.01}}}',
            "champion_comparison.auc: 'max_regression' = -0.01 must be >= 0",
        ),
        (
            '{"champion_comparison": {"auc": {"direction": "higher", '
            '"max_regression_relative": -1}}}',
            "'max_regression_relative' = -1 must be >= 0",
        ),
        (
            '{"champion_comparison": {"auc": {"direction": "higher", "tolerance": 1}}}',
            "champion_comparison.auc has unknown key(s) ['tolerance']",
        ),
        (
            '{"latency": {"p95_ms_max": 5}}',
            "'latency' has unknown key(s) ['p95_ms_max']; allowed: max_ratio_to_champion, "
            "median_ms_max",
        ),
        ('{"latency": {"median_ms_max": "fast"}}', "latency: 'median_ms_max' = \"fast\" must be"),
        ('{"latency": {"median_ms_max": -5}}', "latency: 'median_ms_max' = -5 must be >= 0"),
        (
            '{"latency": {"max_ratio_to_champion": 0}}',
            "latency: 'max_ratio_to_champion' = 0 must be > 0",
        ),
    ],
)
def test_bad_policies_are_rejected_with_a_message_naming_the_problem(text, message):
    with pytest.raises(GatePolicyError) as raised:
        parse_gate_policy(text)
    assert message in str(raised.value)


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_default_policies_parse(task):
    policy = parse_gate_policy(json.dumps(DEFAULT_GATE_POLICY[task]))
    assert policy.latency == LatencyRule(max_ratio_to_champion=1.5)


def test_blank_policy_uses_the_tasks_default():
    evaluation = {
        "task": "binary",
        "candidate": {"roc_auc": 0.55, "log_loss": 0.5},
        "champion": None,
        "latency": FAST,
    }
    decision = run_gate("  ", evaluation)
    assert _failed(decision) == [("threshold", "roc_auc")]
    assert decision.failures[0].threshold == 0.6


def test_given_policy_overrides_the_default():
    evaluation = {"task": "binary", "candidate": {"roc_auc": 0.55}, "champion": None}
    assert run_gate('{"thresholds": {"roc_auc": {"min": 0.5}}}', evaluation).passed


@pytest.mark.parametrize("blank", ["", "  \n"])
def test_blank_policy_text_parses_as_the_tasks_default(blank):
    default = parse_gate_policy(json.dumps(DEFAULT_GATE_POLICY["regression"]))
    assert parse_gate_policy(blank, "regression") == default


def test_blank_policy_without_a_task_is_rejected():
    with pytest.raises(GatePolicyError, match="evaluation task None has no default"):
        parse_gate_policy("")


def test_blank_policy_for_unknown_task_is_rejected():
    with pytest.raises(GatePolicyError, match="evaluation task 'ranking' has no default"):
        run_gate("", {"task": "ranking", "candidate": {}})


def test_an_evaluation_whose_champion_is_not_metrics_is_refused_naming_it():
    evaluation = {"task": "binary", "candidate": {"roc_auc": 0.8}, "champion": [0.7]}
    with pytest.raises(GatePolicyError, match="evaluation's 'champion' is not a metrics object"):
        run_gate("", evaluation)


def test_decision_markdown_leads_with_verdict_and_failed_rule():
    decision = evaluate_gate(POLICY, {"roc_auc": 0.612, "log_loss": 0.45}, None, FAST)
    text = decision_markdown(decision)
    assert text.startswith("## Quality gate FAILED")
    assert "- **threshold**: roc_auc 0.612 &lt; min 0.7" in text
    assert "No champion yet" in text
    assert "| threshold | roc_auc | 0.612 | 0.7 | **FAIL** |" in text
    assert "| champion_comparison | roc_auc | 0.612 | — | skipped |" in text


def test_decision_markdown_shows_policy_metric_names_as_text_never_as_html():
    hostile = "<img src=x onerror=alert(1)>"
    policy = parse_gate_policy(json.dumps({"thresholds": {hostile: {"min": 0.5}}}))
    text = decision_markdown(evaluate_gate(policy, GOOD, None, None))
    assert "<img" not in text
    assert "- **threshold**: &lt;img src=x onerror=alert(1)&gt; is missing" in text


def test_decision_is_json_serialisable():
    decision = evaluate_gate(POLICY, {"roc_auc": 0.612}, {"roc_auc": 0.7}, None)
    assert (
        json.loads(json.dumps([f.to_json() for f in decision.failures]))[0]["check"] == "threshold"
    )
