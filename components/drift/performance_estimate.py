"""The champion's quality on a production window estimated from its own scores, before labels.

Labels arrive late (a churn flag a month after the scores), drift says only that the inputs
moved. Confidence-based performance estimation (NannyML's CBPE) reads the quality off the
scores instead: if the model's probabilities are calibrated, a row scored p is positive with
probability p, so every cell of the confusion matrix has an expectation:

    E[TP] = Σ p over the rows predicted positive,   E[FP] = Σ (1 - p) over the same rows,
    E[FN] = Σ p over the rows predicted negative,   E[TN] = Σ (1 - p) over the same rows.

Estimated accuracy is (E[TP] + E[TN]) / n; expected log loss of the scores s is the mean of
-p log s - (1 - p) log(1 - s); estimated ROC AUC integrates the expected TPR and FPR swept over
the score thresholds (E[TP](t) / Σ p against E[FP](t) / Σ (1 - p)), ties counted half.

The premise is calibration, so it is checked first on the test split's labelled scores
(`fit_calibration`): the expected calibration error (ECE) is compared with what perfectly
calibrated scores of the same split would show by chance (labels redrawn from the scores) and
with a tolerance; only beyond both is an isotonic regression (scikit-learn's, in the lock
through mlflow) fitted to map scores to probabilities. The correction must stay valid on the
window: it assumes the score-to-outcome relation did not change (covariate shift only), which
is exactly the situation in which CBPE is meant to be used.

Each estimate carries an interval: labels are drawn from Bernoulli(p) a few hundred times and
the metric measured on each draw; the percentile interval is the spread a realized metric
would show if the calibrated probabilities are right. It does not include the calibration's
own error. When the window holds labels, the realized metric is reported beside the estimate.

The module runs past 350 lines because the calibration check, the expected metrics and the
sampled intervals are one estimator over the same arrays; apart, none would read on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.stats import rankdata

from ctloop.components.evaluate.metrics import roc_auc

CALIBRATION_BINS = 10
"""Equal-width score bins of the expected calibration error."""
CALIBRATION_TOLERANCE = 0.02
"""ECE accepted as calibrated even when the split is large enough to tell it from chance."""
CALIBRATION_NULL_QUANTILE = 0.95
"""ECE beyond this quantile of perfectly calibrated scores' ECE counts as miscalibrated."""
DEFAULT_DRAWS = 300
_MAX_DRAW_CELLS = 20_000_000
"""Sampled labels held at once (draws x rows), so a large window is sampled in chunks."""
_LOG_EPS = 1e-15
ESTIMATED_METRICS = ("roc_auc", "accuracy", "log_loss")


class PerformanceEstimateError(ValueError):
    """Scores or labels that performance cannot be estimated from."""


@dataclass(frozen=True)
class Calibration:
    """How the model's scores become probabilities, and why.

    Attributes:
        method: "isotonic" when the test split showed the scores miscalibrated, else "identity".
        ece: Expected calibration error of the raw scores on the test split (None: not checked).
        ece_noise: The ECE that perfectly calibrated scores of that split reach by chance at
            `CALIBRATION_NULL_QUANTILE` (None: not checked).
        ece_calibrated: ECE of the corrected scores on the test split (in-sample).
        rows: Labelled test rows the check used.
    """

    method: Literal["identity", "isotonic"]
    ece: float | None = None
    ece_noise: float | None = None
    ece_calibrated: float | None = None
    rows: int = 0
    _isotonic: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def identity(cls) -> Calibration:
        """Scores taken as probabilities unchecked (no labelled test split at hand)."""
        return cls(method="identity")

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability of each score."""
        if self._isotonic is None:
            return scores
        return np.asarray(self._isotonic.predict(scores), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "ece": self.ece,
            "ece_noise": self.ece_noise,
            "ece_calibrated": self.ece_calibrated,
            "rows": self.rows,
        }


@dataclass(frozen=True)
class MetricEstimate:
    """One metric on the window: estimated, its interval, and realized when labels exist.

    `estimate`, `lower` and `upper` are None only when the metric is undefined (ROC AUC of a
    window whose probabilities are all 0 or all 1).
    """

    estimate: float | None
    lower: float | None
    upper: float | None
    realized: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {
            "estimate": self.estimate,
            "lower": self.lower,
            "upper": self.upper,
            "realized": self.realized,
        }


@dataclass(frozen=True)
class PerformanceEstimate:
    """Estimated quality of the model on one window (see the module docstring).

    Attributes:
        rows: Scored rows in the window.
        labelled_rows: Rows with a label (realized metrics are measured on these).
        threshold: Score at or above which a row is predicted positive (accuracy).
        confidence: Coverage the intervals aim at.
        calibration: The calibration the estimate rests on.
        metrics: roc_auc, accuracy and log_loss.
        expected_confusion: Expected tp, fp, fn, tn at the threshold.
        notes: What was not measured, and why.
    """

    rows: int
    labelled_rows: int
    threshold: float
    confidence: float
    calibration: Calibration
    metrics: dict[str, MetricEstimate]
    expected_confusion: dict[str, float]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "threshold": self.threshold,
            "confidence": self.confidence,
            "calibration": self.calibration.to_json(),
            "metrics": {name: metric.to_json() for name, metric in self.metrics.items()},
            "expected_confusion": dict(self.expected_confusion),
            "notes": list(self.notes),
        }


def expected_calibration_error(labels: Any, scores: Any, bins: int = CALIBRATION_BINS) -> float:
    """Row-weighted mean over equal-width score bins of |mean label - mean score|."""
    y = _labels(labels, "labels")
    s = _scores(scores, "scores")
    _same_length(y, s, "labels", "scores")
    return float(_ece(y[None, :], s, bins)[0])


def fit_calibration(
    labels: Any,
    scores: Any,
    *,
    tolerance: float = CALIBRATION_TOLERANCE,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
) -> Calibration:
    """Check the scores' calibration on a labelled test split; correct it when needed.

    Miscalibrated means an ECE above `tolerance` and above the `CALIBRATION_NULL_QUANTILE`
    quantile of the ECE of `draws` label sets drawn from the scores themselves (what a
    calibrated model shows on a split this size by chance). Only then is an isotonic
    regression fitted, so a calibrated model's estimates do not take on a fit's noise.

    Raises:
        PerformanceEstimateError: empty split, lengths that differ, labels other than 0/1,
            scores outside [0, 1] or not finite, or a split with one class only.
    """
    y = _labels(labels, "test split labels")
    s = _scores(scores, "test split scores")
    _same_length(y, s, "test split labels", "test split scores")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise PerformanceEstimateError(
            f"the test split has one class only ({positives} positive of {y.size} rows): "
            "calibration cannot be checked"
        )
    ece = float(_ece(y[None, :], s, CALIBRATION_BINS)[0])
    rng = np.random.default_rng(seed)
    null = np.concatenate(
        [_ece(sample, s, CALIBRATION_BINS) for sample in _bernoulli_draws(rng, s, draws)]
    )
    noise = float(np.quantile(null, CALIBRATION_NULL_QUANTILE))
    if ece <= max(tolerance, noise):
        return Calibration("identity", ece=ece, ece_noise=noise, ece_calibrated=ece, rows=y.size)
    from sklearn.isotonic import IsotonicRegression

    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    corrected = np.asarray(isotonic.predict(s), dtype=np.float64)
    return Calibration(
        "isotonic",
        ece=ece,
        ece_noise=noise,
        ece_calibrated=float(_ece(y[None, :], corrected, CALIBRATION_BINS)[0]),
        rows=y.size,
        _isotonic=isotonic,
    )


def estimate_performance(
    scores: Any,
    calibration: Calibration,
    *,
    threshold: float = 0.5,
    labels: Any = None,
    draws: int = DEFAULT_DRAWS,
    confidence: float = 0.95,
    seed: int = 0,
) -> PerformanceEstimate:
    """Estimate ROC AUC, accuracy and log loss on a window from the model's scores alone.

    Args:
        scores: The model's scores on the window's rows (probabilities in [0, 1]).
        calibration: From `fit_calibration` on the test split (or `Calibration.identity()`).
        threshold: Scores at or above it are predicted positive.
        labels: The window's labels when some have arrived (0/1, NaN where missing), in the
            scores' order; the realized metrics are measured on the labelled rows.
        draws: Label sets drawn from the calibrated probabilities for the intervals.
        confidence: Coverage of the percentile intervals.
        seed: Seed of the draws, so a report can be reproduced.

    Raises:
        PerformanceEstimateError: an empty window, scores outside [0, 1] or not finite, labels
            other than 0/1/NaN or of another length, or a threshold, draw count or confidence
            out of range.
    """
    s = _scores(scores, "window scores")
    if not 0.0 <= threshold <= 1.0:
        raise PerformanceEstimateError(f"threshold must lie in [0, 1], got {threshold}")
    if not 0.0 < confidence < 1.0:
        raise PerformanceEstimateError(f"confidence must lie in (0, 1), got {confidence}")
    if draws < 2:
        raise PerformanceEstimateError(f"draws must be at least 2, got {draws}")
    p = np.clip(calibration.probabilities(s), 0.0, 1.0)
    predicted = s >= threshold
    confusion = {
        "tp": float(p[predicted].sum()),
        "fp": float((1.0 - p[predicted]).sum()),
        "fn": float(p[~predicted].sum()),
        "tn": float((1.0 - p[~predicted]).sum()),
    }
    estimates = {
        "roc_auc": _expected_roc_auc(p, s),
        "accuracy": (confusion["tp"] + confusion["tn"]) / s.size,
        "log_loss": float(np.mean(p * _loss_if_positive(s) + (1.0 - p) * _loss_if_negative(s))),
    }
    sampled = _sampled_metrics(np.random.default_rng(seed), p, s, predicted, draws)
    realized, labelled, notes = _realized(labels, s, threshold)
    tail = 50.0 * (1.0 - confidence)
    metrics = {}
    for name in ESTIMATED_METRICS:
        values = sampled[name][np.isfinite(sampled[name])]
        lower, upper = (
            (float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail)))
            if values.size
            else (None, None)
        )
        metrics[name] = MetricEstimate(estimates[name], lower, upper, realized.get(name))
    return PerformanceEstimate(
        rows=int(s.size),
        labelled_rows=labelled,
        threshold=float(threshold),
        confidence=float(confidence),
        calibration=calibration,
        metrics=metrics,
        expected_confusion=confusion,
        notes=notes,
    )


def _expected_roc_auc(p: np.ndarray, s: np.ndarray) -> float | None:
    """Trapezoid area under the expected ROC curve, one point per distinct score."""
    positives, negatives = p.sum(), (1.0 - p).sum()
    if positives <= 0.0 or negatives <= 0.0:
        return None
    order = np.argsort(-s, kind="mergesort")
    sorted_scores = s[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(sorted_scores)), s.size - 1]
    tpr = np.r_[0.0, np.cumsum(p[order])[last_of_threshold] / positives]
    fpr = np.r_[0.0, np.cumsum(1.0 - p[order])[last_of_threshold] / negatives]
    return float(np.trapezoid(tpr, fpr))


def _sampled_metrics(
    rng: np.random.Generator, p: np.ndarray, s: np.ndarray, predicted: np.ndarray, draws: int
) -> dict[str, np.ndarray]:
    """Each metric measured on `draws` label sets drawn from Bernoulli(p), chunk by chunk.

    All three reduce to dot products with the drawn labels: accuracy counts agreements with
    the predictions, log loss picks one of two losses per row, and ROC AUC is the rank sum
    (Mann-Whitney U) of the positives, ties ranked at their mean.
    """
    ranks = rankdata(s)
    loss_positive, loss_negative = _loss_if_positive(s), _loss_if_negative(s)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATED_METRICS}
    for sample in _bernoulli_draws(rng, p, draws):
        y = sample.astype(np.float64)
        positives = y.sum(axis=1)
        negatives = s.size - positives
        with np.errstate(divide="ignore", invalid="ignore"):
            u = y @ ranks - positives * (positives + 1.0) / 2.0
            chunks["roc_auc"].append(u / (positives * negatives))
        agreements = y @ predicted + (~predicted).sum() - y @ ~predicted
        chunks["accuracy"].append(agreements / s.size)
        chunks["log_loss"].append(
            (y @ (loss_positive - loss_negative) + loss_negative.sum()) / s.size
        )
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _bernoulli_draws(rng: np.random.Generator, p: np.ndarray, draws: int) -> Iterator[np.ndarray]:
    """`draws` label sets (rows of 0/1) drawn from Bernoulli(p), at most a memory bound at once."""
    per_chunk = max(1, _MAX_DRAW_CELLS // max(p.size, 1))
    for start in range(0, draws, per_chunk):
        count = min(per_chunk, draws - start)
        yield rng.random((count, p.size)) < p


def _realized(
    labels: Any, s: np.ndarray, threshold: float
) -> tuple[dict[str, float], int, list[str]]:
    """The metrics on the labelled rows, how many there were, and why any are missing."""
    if labels is None:
        return {}, 0, ["the window has no labels: no realized metrics"]
    y = _labels(labels, "window labels", missing=True)
    _same_length(y, s, "window labels", "window scores")
    labelled = ~np.isnan(y)
    count = int(labelled.sum())
    if count == 0:
        return {}, 0, ["no window row is labelled yet: no realized metrics"]
    y, s = y[labelled], s[labelled]
    realized = {
        "accuracy": float(np.mean((s >= threshold) == (y == 1.0))),
        "log_loss": float(np.mean(y * _loss_if_positive(s) + (1.0 - y) * _loss_if_negative(s))),
    }
    if int(y.sum()) in (0, count):
        return realized, count, ["the labelled rows hold one class only: no realized roc_auc"]
    return {"roc_auc": roc_auc(y, s), **realized}, count, []


def _ece(samples: np.ndarray, s: np.ndarray, bins: int) -> np.ndarray:
    """ECE of each row of `samples` (label sets) against the scores `s`."""
    index = np.minimum((s * bins).astype(np.int64), bins - 1)
    score_sums = np.bincount(index, weights=s, minlength=bins)
    members = np.zeros((s.size, bins))
    members[np.arange(s.size), index] = 1.0
    label_sums = samples.astype(np.float64) @ members
    return np.abs(label_sums - score_sums).sum(axis=1) / s.size


def _loss_if_positive(s: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(s, _LOG_EPS, 1.0))


def _loss_if_negative(s: np.ndarray) -> np.ndarray:
    return -np.log1p(-np.clip(s, 0.0, 1.0 - _LOG_EPS))


def _numbers(values: Any, what: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise PerformanceEstimateError(f"{what} must be numbers: {error}") from None
    if array.size == 0:
        raise PerformanceEstimateError(f"{what} are empty")
    return array


def _scores(values: Any, what: str) -> np.ndarray:
    s = _numbers(values, what)
    if not np.isfinite(s).all():
        raise PerformanceEstimateError(
            f"{what} contain {int((~np.isfinite(s)).sum())} NaN or infinite value(s)"
        )
    if s.min() < 0.0 or s.max() > 1.0:
        raise PerformanceEstimateError(
            f"{what} must be probabilities in [0, 1], found range [{s.min()}, {s.max()}]"
        )
    return s


def _labels(values: Any, what: str, missing: bool = False) -> np.ndarray:
    """0/1 labels; with `missing`, NaN marks a row whose label has not arrived."""
    y = _numbers(values, what)
    bad = np.setdiff1d(np.unique(y[~np.isnan(y)] if missing else y), [0.0, 1.0])
    if bad.size:
        allowed = "0 or 1 (NaN where missing)" if missing else "0 or 1"
        raise PerformanceEstimateError(f"{what} must be {allowed}, found {bad[:5].tolist()}")
    return y


def _same_length(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    if first.size != second.size:
        raise PerformanceEstimateError(
            f"{first_name} ({first.size}) and {second_name} ({second.size}) differ in length"
        )
