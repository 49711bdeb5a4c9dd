import json

import numpy as np
import pyarrow as pa
import pytest

from ctloop.components.data.profile import reference_profile, with_prediction_distribution
from ctloop.components.drift.detection import detect_drift
from ctloop.components.drift.policy import (
    DriftPolicy,
    DriftPolicyError,
    Thresholds,
    parse_drift_policy,
)
from ctloop.components.drift.window_profile import WindowProfileError, window_profile

FEATURES = ["age", "income", "region"]


def _table(rows: int, seed: int, income_shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    regions = np.array(["north", "south", "east", "west"])
    return pa.table(
        {
            "age": rng.normal(40.0, 10.0, rows),
            "income": rng.normal(50.0 + income_shift * 10.0, 10.0, rows),
            "region": regions[rng.integers(0, 4, rows)],
        }
    )


@pytest.fixture(scope="module")
def reference() -> tuple[pa.Table, dict]:
    table = _table(20_000, seed=0)
    profile = reference_profile(table, "y", "binary", FEATURES, ["region"], None)
    scores = np.random.default_rng(1).beta(2.0, 5.0, 20_000)
    return table, with_prediction_distribution(profile, scores)


def _window(table: pa.Table, profile: dict):
    return window_profile(table.to_batches(), profile)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "drift policy must be a JSON object"),
        ('{"drift_shar": 0.3}', r"unknown key\(s\) \['drift_shar'\]"),
        ('{"default": {"psi": -1}}', r"default.psi = -1 must be in \(0, inf\]"),
        ('{"default": {"js_distance": 1.5}}', r"default.js_distance = 1.5 must be in \(0, 1\]"),
        ('{"features": {"age": {"ks": 0.1}}}', r"features.age has unknown key\(s\) \['ks'\]"),
        ('{"features": {"age": 0.1}}', "features.age must be a JSON object, got 0.1"),
        ('{"drift_share": 1}', r"drift_share = 1 must be in \[0, 1\)"),
        ('{"false_alarm_rate": 0}', r"false_alarm_rate = 0 must be in \(0, 0.5\)"),
        ('{"feature_weights": {"age": "high"}}', 'feature_weights.age = "high" must be a finite'),
        ('{"feature_weights": {"age": 0}}', "at least one feature a weight above 0"),
        ('{"include_prediction": "yes"}', 'include_prediction = "yes" must be true or false'),
        ('{"all_missing_drifts": 1}', "all_missing_drifts = 1 must be true or false"),
        ('{"default": {"psi": true}}', "default.psi = true must be a finite number"),
        ('{"performance": []}', "performance must be a JSON object"),
        (
            '{"performance": {"estimated_auc": {"min": 0.7}}}',
            r"performance has unknown key\(s\) \['estimated_auc'\]; allowed: estimated_roc_auc",
        ),
        (
            '{"performance": {"estimated_roc_auc": {"floor": 0.7}}}',
            r"performance.estimated_roc_auc has unknown key\(s\) \['floor'\]; allowed: min, max",
        ),
        ('{"performance": {"estimated_accuracy": {}}}', "estimated_accuracy needs a min or a max"),
        (
            '{"performance": {"estimated_roc_auc": {"min": 1.2}}}',
            r"performance.estimated_roc_auc.min = 1.2 must be in \[0, 1\]",
        ),
        (
            '{"performance": {"estimated_roc_auc": {"min": 0.8, "max": 0.7}}}',
            "min 0.8 is above max 0.7",
        ),
        (
            '{"performance": {"max_drop": {"f1": 0.1}}}',
            r"performance.max_drop has unknown key\(s\) \['f1'\]",
        ),
        (
            '{"performance": {"max_drop": {"roc_auc": -0.1}}}',
            r"performance.max_drop.roc_auc = -0.1 must be in \[0, inf\]",
        ),
    ],
)
def test_policy_errors_name_key_value_and_rule(text, message):
    with pytest.raises(DriftPolicyError, match=message):
        parse_drift_policy(text)


def test_the_performance_section_bounds_estimates_and_drops():
    policy = parse_drift_policy(
        '{"performance": {"estimated_roc_auc": {"min": 0.7}, "estimated_log_loss": {"max": 0.6},'
        ' "max_drop": {"roc_auc": 0.05}}}'
    )
    assert policy.performance.estimated == {"roc_auc": (0.7, None), "log_loss": (None, 0.6)}
    assert policy.performance.max_drop == {"roc_auc": 0.05}
    assert not parse_drift_policy("").performance


def test_feature_thresholds_override_defaults_key_by_key_and_null_switches_off():
    policy = parse_drift_policy(
        json.dumps(
            {
                "default": {"psi": 0.25},
                "features": {"age": {"ks_statistic": None}},
                "drift_share": 0.5,
            }
        )
    )
    assert policy.thresholds("age") == Thresholds(psi=0.25, ks_statistic=None)
    assert policy.thresholds("income") == Thresholds(psi=0.25)
    assert policy.drift_share == 0.5
    assert parse_drift_policy("{}") == DriftPolicy()


@pytest.mark.parametrize("blank", ["", " \n\t"])
def test_blank_policy_text_is_the_default_policy(blank):
    assert parse_drift_policy(blank) == DriftPolicy()


def test_policy_naming_an_unknown_feature_is_rejected(reference):
    table, profile = reference
    policy = parse_drift_policy('{"features": {"agee": {"psi": 0.1}}}')
    with pytest.raises(DriftPolicyError, match=r"features names feature\(s\) \['agee'\]"):
        detect_drift(profile, _window(table.slice(0, 100), profile), policy)


def test_shifted_feature_is_flagged_with_its_reasons_and_others_are_not(reference):
    _, profile = reference
    result = detect_drift(profile, _window(_table(20_000, seed=2, income_shift=0.5), profile))
    document = result.to_json()
    assert document["drifted_features"] == ["income"]
    income = document["features"]["income"]
    assert income["drifted"] is True
    assert any(reason.startswith("ks_statistic") for reason in income["reasons"])
    assert 0.15 < income["ks_statistic"] < 0.25
    assert document["features"]["age"]["drifted"] is False
    assert document["drift_share"] == pytest.approx(1 / 3)
    assert document["drift_detected"] is True
    json.dumps(document, allow_nan=False)


def test_importance_weights_decide_whether_one_drifted_feature_is_enough(reference):
    _, profile = reference
    window = _window(_table(20_000, seed=3, income_shift=0.5), profile)
    light = parse_drift_policy('{"feature_weights": {"age": 5, "income": 1, "region": 4}}')
    heavy = parse_drift_policy('{"feature_weights": {"age": 1, "income": 8, "region": 1}}')
    assert detect_drift(profile, window, light).drift_share == pytest.approx(0.1)
    assert detect_drift(profile, window, light).drift_detected is False
    assert detect_drift(profile, window, heavy).drift_detected is True


def test_switched_off_measures_do_not_flag(reference):
    _, profile = reference
    window = _window(_table(20_000, seed=4, income_shift=0.5), profile)
    off = {"psi": None, "js_distance": None, "ks_statistic": None}
    policy = parse_drift_policy(json.dumps({"features": {"income": off}}))
    result = detect_drift(profile, window, policy)
    assert result.drifted_features == []
    assert result.features["income"]["ks_statistic"] > 0.15  # still reported


def test_tiny_window_is_judged_against_the_noise_bound_not_the_effect_threshold(reference):
    _, profile = reference
    flagged = 0
    for seed in range(40):
        result = detect_drift(profile, _window(_table(30, seed=100 + seed), profile))
        flagged += result.drift_detected
        thresholds = result.features["age"]["thresholds"]
        assert thresholds["ks_statistic"] > 0.3  # c(alpha) / sqrt(30) rules, not 0.1
    assert flagged <= 1


def test_exact_ks_replaces_the_binned_estimate_when_raw_values_are_given(reference):
    table, profile = reference
    current = _table(2_000, seed=5, income_shift=0.3)
    raw = {"income": (table.column("income").to_numpy(), current.column("income").to_numpy())}
    result = detect_drift(profile, _window(current, profile), exact_ks_values=raw)
    income = result.features["income"]
    assert income["ks_method"] == "exact"
    assert income["ks_error_bound"] == 0.0
    assert result.features["age"]["ks_method"] == "binned"
    with pytest.raises(DriftPolicyError, match="categorical"):
        detect_drift(profile, _window(current, profile), exact_ks_values={"region": raw["income"]})


def test_prediction_drift_alone_sets_drift_detected_unless_excluded(reference):
    table, profile = reference
    window = _window(table.slice(0, 5_000), profile)
    shifted_scores = np.random.default_rng(6).beta(4.0, 3.0, 5_000)
    result = detect_drift(profile, window, scores_window=shifted_scores)
    assert result.prediction["drifted"] is True
    assert result.drifted_features == []
    assert result.drift_detected is True
    excluded = parse_drift_policy('{"include_prediction": false}')
    assert detect_drift(profile, window, excluded, scores_window=shifted_scores).drift_detected is (
        False
    )
    same_scores = np.random.default_rng(7).beta(2.0, 5.0, 5_000)
    assert detect_drift(profile, window, scores_window=same_scores).prediction["drifted"] is False


def test_performance_metrics_from_the_caller_are_carried_into_the_result(reference):
    table, profile = reference
    result = detect_drift(
        profile, _window(table.slice(0, 1_000), profile), performance={"roc_auc": 0.71}
    )
    assert result.to_json()["performance"] == {"roc_auc": 0.71}


def test_window_profiled_against_another_reference_is_rejected(reference):
    table, profile = reference
    other = reference_profile(table, "y", "binary", ["age"], [], None)
    with pytest.raises(WindowProfileError, match="profiled for features"):
        detect_drift(profile, _window(table.slice(0, 100), other))
