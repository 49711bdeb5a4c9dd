"""Performance estimated from the scores alone: calibrated check, coverage, real shifts."""

import json

import numpy as np
import pandas as pd
import pytest

from ctloop.components.data.calibration import (
    Calibration,
    CalibrationError,
    expected_calibration_error,
    fit_calibration,
)
from ctloop.components.drift.performance_estimate import (
    ESTIMATED_METRICS,
    PerformanceEstimateError,
    estimate_performance,
)
from ctloop.components.evaluate.metrics import classification_metrics


def _calibrated(rng: np.random.Generator, rows: int, a: float = 2.0, b: float = 3.0):
    """Scores and labels drawn from them: the scores are calibrated by construction."""
    scores = rng.beta(a, b, rows)
    return scores, (rng.random(rows) < scores).astype(float)


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    scores, labels = _calibrated(np.random.default_rng(0), 5000)
    return fit_calibration(labels, scores)


def test_calibrated_scores_keep_the_identity(calibration):
    assert calibration.method == "identity"
    assert calibration.ece <= calibration.ece_noise


def test_realized_metrics_fall_inside_the_intervals_in_most_windows(calibration):
    rng = np.random.default_rng(1)
    repetitions = 200
    covered = dict.fromkeys(ESTIMATED_METRICS, 0)
    for seed in range(repetitions):
        scores, labels = _calibrated(rng, 800)
        estimate = estimate_performance(scores, calibration, labels=labels, seed=seed)
        for name, metric in estimate.metrics.items():
            covered[name] += metric.lower <= metric.realized <= metric.upper
    rates = {name: count / repetitions for name, count in covered.items()}
    # Nominal 95%; the binomial spread of 200 windows is about 1.5 points.
    assert all(rate >= 0.89 for rate in rates.values()), rates
    assert all(rate <= 0.995 for rate in rates.values()), rates


def test_the_point_estimates_match_the_realized_metrics_on_average(calibration):
    rng = np.random.default_rng(2)
    errors = {name: [] for name in ESTIMATED_METRICS}
    for seed in range(50):
        scores, labels = _calibrated(rng, 1000)
        estimate = estimate_performance(scores, calibration, labels=labels, seed=seed, draws=50)
        for name, metric in estimate.metrics.items():
            errors[name].append(metric.estimate - metric.realized)
    bias = {name: abs(float(np.mean(values))) for name, values in errors.items()}
    assert all(value < 0.01 for value in bias.values()), bias


def test_a_less_confident_window_gets_lower_estimates(calibration):
    rng = np.random.default_rng(3)
    confident = rng.beta(0.6, 0.9, 3000)
    hesitant = 0.5 + 0.3 * (confident - 0.5)
    sure = estimate_performance(confident, calibration)
    unsure = estimate_performance(hesitant, calibration)
    for name in ("roc_auc", "accuracy"):
        assert unsure.metrics[name].upper < sure.metrics[name].lower, name
    assert unsure.metrics["log_loss"].estimate > sure.metrics["log_loss"].estimate
    assert sure.notes == ["the window has no labels: no realized metrics"]
    assert sure.metrics["roc_auc"].realized is None


def test_miscalibrated_scores_are_corrected_and_estimated_closer():
    rng = np.random.default_rng(4)
    test_probabilities, test_labels = _calibrated(rng, 5000)
    calibration = fit_calibration(test_labels, test_probabilities**3)
    assert calibration.method == "isotonic"
    assert calibration.ece > calibration.ece_noise
    assert calibration.ece_calibrated < calibration.ece / 5
    for seed in range(5):
        probabilities, labels = _calibrated(rng, 2000)
        scores = probabilities**3
        corrected = estimate_performance(scores, calibration, labels=labels, seed=seed)
        raw = estimate_performance(scores, Calibration.identity(), labels=labels, seed=seed)
        for name in ESTIMATED_METRICS:
            realized = corrected.metrics[name].realized
            assert abs(corrected.metrics[name].estimate - realized) < abs(
                raw.metrics[name].estimate - realized
            ), (seed, name)


def test_realized_metrics_agree_with_evaluation_and_skip_missing_labels(calibration):
    rng = np.random.default_rng(5)
    scores, labels = _calibrated(rng, 500)
    partly = labels.copy()
    partly[::3] = np.nan
    estimate = estimate_performance(scores, calibration, labels=partly, threshold=0.4)
    known = ~np.isnan(partly)
    expected = classification_metrics(labels[known], scores[known], threshold=0.4)
    assert estimate.labelled_rows == int(known.sum())
    for name in ESTIMATED_METRICS:
        assert estimate.metrics[name].realized == pytest.approx(expected[name])


def test_expected_confusion_sums_the_probabilities_on_each_side_of_the_threshold():
    scores = np.array([0.1, 0.3, 0.6, 0.9])
    estimate = estimate_performance(scores, Calibration.identity(), threshold=0.5, draws=10)
    assert estimate.expected_confusion == pytest.approx(
        {"tp": 1.5, "fp": 0.5, "fn": 0.4, "tn": 1.6}
    )
    assert estimate.metrics["accuracy"].estimate == pytest.approx(3.1 / 4)


def test_the_result_round_trips_through_json(calibration):
    scores, labels = _calibrated(np.random.default_rng(6), 300)
    document = estimate_performance(scores, calibration, labels=labels).to_json()
    assert json.loads(json.dumps(document, allow_nan=False)) == document
    assert document["calibration"]["method"] == "identity"
    assert set(document["metrics"]) == set(ESTIMATED_METRICS)


def test_one_class_labels_give_no_realized_auc_but_the_rest(calibration):
    scores = np.array([0.2, 0.7, 0.9])
    estimate = estimate_performance(scores, calibration, labels=[1, 1, 1])
    assert estimate.metrics["roc_auc"].realized is None
    assert estimate.metrics["accuracy"].realized == pytest.approx(2 / 3)
    assert estimate.notes == ["the labelled rows hold one class only: no realized roc_auc"]


def test_expected_calibration_error_weighs_each_bin_by_its_rows():
    assert expected_calibration_error([0, 1, 0, 1, 1], [0.5, 0.5, 0.5, 0.5, 0.9]) == pytest.approx(
        0.02
    )
    assert expected_calibration_error([1, 1], [0.05, 0.05]) == pytest.approx(0.95)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: estimate_performance([], c), "window scores are empty"),
        (lambda c: estimate_performance([0.2, np.nan], c), "window scores contain 1 NaN"),
        (lambda c: estimate_performance([0.2, 1.5], c), "window scores must be probabilities"),
        (lambda c: estimate_performance([0.2], c, labels=[1, 0]), "differ in length"),
        (
            lambda c: estimate_performance([0.2], c, labels=[2]),
            "window labels must be 0 or 1 \\(NaN",
        ),
        (lambda c: estimate_performance([0.2], c, threshold=2), "threshold must lie"),
    ],
)
def test_bad_input_is_one_error_naming_what(calibration, call, message):
    with pytest.raises(PerformanceEstimateError, match=message):
        call(calibration)
    assert issubclass(PerformanceEstimateError, ValueError)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fit_calibration([1, 1, 1], [0.2, 0.5, 0.9]), "test split has one class"),
        (lambda: fit_calibration([0, 1], [-0.1, 0.5]), "test split scores must be prob"),
        (lambda: fit_calibration([0, 2], [0.1, 0.5]), "test split labels must be 0 or 1"),
        (lambda: fit_calibration([0, 1, 1], [0.1, 0.5]), "differ in length"),
    ],
)
def test_bad_test_split_is_one_error_naming_what(call, message):
    with pytest.raises(CalibrationError, match=message):
        call()
    assert issubclass(CalibrationError, ValueError)


def test_telco_estimates_track_the_realized_quality_of_a_shifted_window(
    telco_churn_parquet, tmp_path
):
    """The demo's windows: the seniors' window is scored worse, and the estimate sees it."""
    import xgboost

    from ctloop.pipelines.demo_data import demo_tables

    tables = demo_tables(telco_churn_parquet, tmp_path)
    frames = [pd.read_parquet(path) for path in (tables.history, tables.steady, tables.shifted)]
    labels = [(frame.pop("churn") == "Yes").to_numpy(dtype=float) for frame in frames]
    features = pd.get_dummies(pd.concat(frames), dtype=float)
    ends = np.cumsum([0] + [len(frame) for frame in frames])
    history, steady, shifted = (
        features.iloc[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)
    )
    order = np.random.default_rng(0).permutation(len(history))
    train, test = order[: len(order) * 7 // 10], order[len(order) * 7 // 10 :]
    model = xgboost.XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, n_jobs=1)
    model.fit(history.iloc[train], labels[0][train])
    calibration = fit_calibration(labels[0][test], model.predict_proba(history.iloc[test])[:, 1])
    estimates = [
        estimate_performance(model.predict_proba(window)[:, 1], calibration, labels=y)
        for window, y in ((steady, labels[1]), (shifted, labels[2]))
    ]
    for estimate in estimates:
        for name in ("roc_auc", "accuracy"):
            metric = estimate.metrics[name]
            assert abs(metric.estimate - metric.realized) < 0.03, (name, metric)
    for name in ("roc_auc", "accuracy"):
        assert estimates[1].metrics[name].estimate < estimates[0].metrics[name].estimate - 0.03
        assert estimates[1].metrics[name].realized < estimates[0].metrics[name].realized
