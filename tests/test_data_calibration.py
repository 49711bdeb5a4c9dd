"""The scores' calibration in the scored profile: fitted on the test split, rebuilt from JSON."""

import json

import numpy as np
import pytest

from ctloop.components.data.calibration import (
    Calibration,
    CalibrationError,
    fit_calibration,
    isotonic_breakpoints,
)
from ctloop.components.data.profile import with_prediction_distribution
from ctloop.components.evaluate.metrics import classification_metrics


def _miscalibrated(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Scores cubed after the labels were drawn from them: far from calibrated."""
    rng = np.random.default_rng(seed)
    probabilities = rng.beta(2.0, 3.0, rows)
    return probabilities**3, (rng.random(rows) < probabilities).astype(float)


def test_isotonic_breakpoints_predict_as_scikit_learn_does():
    from sklearn.isotonic import IsotonicRegression

    scores, labels = _miscalibrated(3000)
    scores = np.round(scores, 3)  # ties, which both pool
    x, fitted = isotonic_breakpoints(labels, scores)
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(scores, labels)
    probe = np.r_[np.linspace(-0.1, 1.1, 500), scores]
    assert np.interp(probe, x, fitted) == pytest.approx(reference.predict(probe), abs=1e-12)
    assert len(x) < len(np.unique(scores))


def test_a_scored_profile_with_labels_carries_the_calibration_and_test_metrics():
    scores, labels = _miscalibrated(4000)
    profile = {"task": "binary", "features": {}}
    scored = with_prediction_distribution(profile, scores, labels)
    calibration = json.loads(json.dumps(scored["calibration"], allow_nan=False))
    assert calibration["method"] == "isotonic"
    assert calibration["threshold"] == 0.5
    expected = classification_metrics(labels, scores)
    assert calibration["test_metrics"] == pytest.approx(
        {name: expected[name] for name in ("roc_auc", "accuracy", "log_loss")}
    )
    fitted = fit_calibration(labels, scores)
    rebuilt = Calibration.from_json(calibration)
    assert rebuilt == fitted
    probe = np.linspace(0.0, 1.0, 101)
    assert rebuilt.probabilities(probe) == pytest.approx(fitted.probabilities(probe))
    assert "calibration" not in profile


def test_calibrated_scores_keep_the_identity_in_the_profile():
    rng = np.random.default_rng(1)
    scores = rng.beta(2.0, 3.0, 4000)
    labels = (rng.random(4000) < scores).astype(float)
    scored = with_prediction_distribution({"task": "binary", "features": {}}, scores, labels)
    assert scored["calibration"]["method"] == "identity"
    assert scored["calibration"]["breakpoints"] is None
    assert Calibration.from_json(scored["calibration"]).probabilities(scores) is scores


def test_without_labels_or_for_a_regression_no_calibration_is_added():
    scores = np.linspace(0.0, 1.0, 50)
    assert "calibration" not in with_prediction_distribution({"task": "binary"}, scores)
    regression = with_prediction_distribution({"task": "regression"}, scores, scores)
    assert "calibration" not in regression


def test_labels_of_one_class_are_refused_naming_the_test_split():
    with pytest.raises(CalibrationError, match="test split has one class only"):
        with_prediction_distribution({"task": "binary"}, np.array([0.2, 0.7]), np.ones(2))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"method": "platt"}, "calibration.method is 'platt'"),
        ({"method": "isotonic"}, "calibration.breakpoints needs"),
        (
            {"method": "isotonic", "breakpoints": {"scores": [0.5, 0.2], "probabilities": [0, 1]}},
            "strictly increasing",
        ),
        (
            {"method": "isotonic", "breakpoints": {"scores": [0.2, 0.5], "probabilities": [0, 2]}},
            "probabilities must be probabilities",
        ),
    ],
)
def test_a_broken_calibration_entry_is_refused_naming_the_field(document, message):
    with pytest.raises(CalibrationError, match=message):
        Calibration.from_json(document)
