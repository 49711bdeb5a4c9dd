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

The premise is calibration, checked at evaluation on the test split's labelled scores and
corrected there by isotonic regression when needed (`ctloop.components.data.calibration`); the
scored profile carries that calibration here. The correction must stay valid on the window: it
assumes the score-to-outcome relation did not change (covariate shift only), which is exactly
the situation in which CBPE is meant to be used.

Each estimate carries an interval: labels are drawn from Bernoulli(p) a few hundred times and
the metric measured on each draw; the percentile interval is the spread a realized metric
would show if the calibrated probabilities are right. It does not include the calibration's
own error. When the window holds labels, the realized metric is reported beside the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import rankdata

from ctloop.components.data.calibration import (
    DECISION_THRESHOLD,
    DEFAULT_DRAWS,
    LABEL_METRICS,
    Calibration,
    bernoulli_draws,
    binary_labels,
    label_metrics,
    probability_scores,
    rank_auc,
    same_length,
    score_losses,
)

ESTIMATED_METRICS = LABEL_METRICS


class PerformanceEstimateError(ValueError):
    """Scores or labels that performance cannot be estimated from."""


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


def estimate_performance(
    scores: Any,
    calibration: Calibration,
    *,
    threshold: float = DECISION_THRESHOLD,
    labels: Any = None,
    draws: int = DEFAULT_DRAWS,
    confidence: float = 0.95,
    seed: int = 0,
) -> PerformanceEstimate:
    """Estimate ROC AUC, accuracy and log loss on a window from the model's scores alone.

    Args:
        scores: The model's scores on the window's rows (probabilities in [0, 1]).
        calibration: From the scored profile (`Calibration.from_json`), or
            `Calibration.identity()`.
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
    s = probability_scores(scores, "window scores", PerformanceEstimateError)
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
    if_positive, if_negative = score_losses(s)
    estimates = {
        "roc_auc": _expected_roc_auc(p, s),
        "accuracy": (confusion["tp"] + confusion["tn"]) / s.size,
        "log_loss": float(np.mean(p * if_positive + (1.0 - p) * if_negative)),
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
    (Mann-Whitney U) of the positives (`rank_auc`).
    """
    ranks = rankdata(s)
    if_positive, if_negative = score_losses(s)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATED_METRICS}
    for sample in bernoulli_draws(rng, p, draws):
        y = sample.astype(np.float64)
        chunks["roc_auc"].append(rank_auc(sample, ranks))
        agreements = y @ predicted + (~predicted).sum() - y @ ~predicted
        chunks["accuracy"].append(agreements / s.size)
        chunks["log_loss"].append((y @ (if_positive - if_negative) + if_negative.sum()) / s.size)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _realized(
    labels: Any, s: np.ndarray, threshold: float
) -> tuple[dict[str, float], int, list[str]]:
    """The metrics on the labelled rows, how many there were, and why any are missing."""
    if labels is None:
        return {}, 0, ["the window has no labels: no realized metrics"]
    y = binary_labels(labels, "window labels", missing=True, error=PerformanceEstimateError)
    same_length(y, s, "window labels", "window scores", PerformanceEstimateError)
    labelled = ~np.isnan(y)
    count = int(labelled.sum())
    if count == 0:
        return {}, 0, ["no window row is labelled yet: no realized metrics"]
    realized = label_metrics(y[labelled], s[labelled], threshold)
    if realized["roc_auc"] is None:
        del realized["roc_auc"]
        return realized, count, ["the labelled rows hold one class only: no realized roc_auc"]
    return realized, count, []
