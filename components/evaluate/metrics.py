"""Model quality metrics, computed with numpy/scipy only (scoring time: `latency`).

The evaluation step's numbers feed the quality gate and the Kubeflow UI (Metrics,
ClassificationMetrics, Markdown), so every value here is a plain Python float and every
curve point is finite (JSON has no NaN or Infinity). scikit-learn is deliberately not a
dependency of the project image; the definitions below match its conventions (average
precision as a step-wise sum, thresholds as "score >= threshold is positive").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

_LOG_LOSS_EPS = 1e-15


class MetricsError(ValueError):
    """Labels or scores that a metric cannot be computed from."""


def _binary_inputs(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricsError(f"labels ({y.size}) and scores ({s.size}) differ in length")
    if y.size == 0:
        raise MetricsError("no rows to compute metrics on")
    bad_labels = np.setdiff1d(np.unique(y), [0.0, 1.0])
    if bad_labels.size:
        raise MetricsError(f"binary labels must be 0 or 1, found {bad_labels[:5].tolist()}")
    if not np.isfinite(s).all():
        raise MetricsError("scores contain NaN or infinite values")
    return y.astype(np.int8), s


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney U) formula; ties count half."""
    y, s = _binary_inputs(y_true, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise MetricsError(
            f"ROC AUC needs both classes; labels have {positives} positive(s) and "
            f"{negatives} negative(s)"
        )
    ranks = rankdata(s)
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, highest threshold first."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tps = np.cumsum(y_sorted, dtype=np.int64)[last_of_threshold]
    fps = (last_of_threshold + 1) - tps
    return tps, fps, s_sorted[last_of_threshold]


def average_precision(y_true: Any, scores: Any) -> float:
    """Area under the precision-recall curve as sum over thresholds of dRecall * precision."""
    y, s = _binary_inputs(y_true, scores)
    positives = int(y.sum())
    if positives == 0:
        raise MetricsError("average precision needs at least one positive label")
    tps, fps, _ = _cumulative_counts(y, s)
    precision = tps / (tps + fps)
    recall = tps / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metrics(y_true: Any, scores: Any, threshold: float = 0.5) -> dict[str, float]:
    """Quality of binary probabilities: ranking, calibration and the thresholded decision.

    Returns:
        roc_auc, pr_auc (average precision), log_loss, accuracy, precision, recall, f1,
        brier, as plain floats. Precision (and f1) are 0 when nothing is predicted positive.
    """
    y, s = _binary_inputs(y_true, scores)
    if s.min() < 0.0 or s.max() > 1.0:
        raise MetricsError(
            f"scores must be probabilities in [0, 1], found range [{s.min()}, {s.max()}]"
        )
    p = np.clip(s, _LOG_LOSS_EPS, 1.0 - _LOG_LOSS_EPS)
    log_loss = -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p))
    predicted = s >= threshold
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    fn = int(np.sum(~predicted & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "roc_auc": roc_auc(y, s),
        "pr_auc": average_precision(y, s),
        "log_loss": float(log_loss),
        "accuracy": float(np.mean(predicted == (y == 1))),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "brier": float(np.mean((s - y) ** 2)),
    }


def regression_metrics(y_true: Any, predictions: Any) -> dict[str, float]:
    """rmse, mae and r2 (r2 is 1.0 for a perfect fit of a constant target, else 0.0 there)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(predictions, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise MetricsError(f"targets ({y.size}) and predictions ({p.size}) differ in length")
    if y.size == 0:
        raise MetricsError("no rows to compute metrics on")
    if not (np.isfinite(y).all() and np.isfinite(p).all()):
        raise MetricsError("targets or predictions contain NaN or infinite values")
    residual = np.sum((y - p) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return {
        "rmse": float(np.sqrt(residual / y.size)),
        "mae": float(np.mean(np.abs(y - p))),
        "r2": float(r2),
    }


def roc_curve(y_true: Any, scores: Any, max_points: int = 200) -> list[dict[str, float]]:
    """ROC points (fpr, tpr, threshold), thresholds descending, at most `max_points`.

    The first point is (0, 0) at a threshold just above the highest score (1.0 when scores
    are below 1), so every threshold is finite as KFP's `log_roc_curve` needs; the last is
    (1, 1) at the lowest score. Long curves are thinned evenly, keeping both ends.
    """
    if max_points < 2:
        raise MetricsError(f"max_points = {max_points} must be >= 2")
    y, s = _binary_inputs(y_true, scores)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise MetricsError("an ROC curve needs both classes in the labels")
    tps, fps, thresholds = _cumulative_counts(y, s)
    top = float(thresholds[0])
    start = 1.0 if top < 1.0 else float(np.nextafter(top, np.inf))
    tpr = np.r_[0.0, tps / positives]
    fpr = np.r_[0.0, fps / negatives]
    thresholds = np.r_[start, thresholds]
    if tpr.size > max_points:
        keep = np.unique(np.linspace(0, tpr.size - 1, max_points).round().astype(np.int64))
        tpr, fpr, thresholds = tpr[keep], fpr[keep], thresholds[keep]
    return [
        {"fpr": float(f), "tpr": float(t), "threshold": float(h)}
        for f, t, h in zip(fpr, tpr, thresholds, strict=True)
    ]


def confusion_matrix(
    y_true: Any,
    scores: Any,
    threshold: float = 0.5,
    label_names: Mapping[str, int] | Sequence[str] | None = None,
) -> tuple[list[str], list[list[int]]]:
    """Counts with rows = actual class, columns = predicted class (KFP's layout).

    Categories are the original label names when given, either as the profile's
    `label_mapping` (name -> 0/1) or as the names ordered by code; else "0" and "1".
    """
    y, s = _binary_inputs(y_true, scores)
    categories = _category_names(label_names)
    predicted = (s >= threshold).astype(np.int8)
    matrix = [
        [int(np.sum((y == actual) & (predicted == guess))) for guess in (0, 1)] for actual in (0, 1)
    ]
    return categories, matrix


def _category_names(label_names: Mapping[str, int] | Sequence[str] | None) -> list[str]:
    if not label_names:
        return ["0", "1"]
    if isinstance(label_names, Mapping):
        by_code = {code: str(name) for name, code in label_names.items()}
        names = [by_code.get(0), by_code.get(1)]
    else:
        names = [str(name) for name in label_names]
    if len(label_names) != 2 or None in names or len(set(names)) != 2:
        raise MetricsError(f"label names {label_names!r} must name class 0 and class 1 once each")
    return names


def _cell(value: Any, signed: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def comparison_markdown(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None) -> str:
    """A Markdown table metric | candidate | champion | delta (candidate - champion)."""
    if champion is None:
        lines = ["**no champion yet**: the candidate is compared with nothing.", ""]
        lines += ["| metric | candidate |", "| --- | ---: |"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in candidate.items()]
        return "\n".join(lines) + "\n"
    lines = ["| metric | candidate | champion | delta |", "| --- | ---: | ---: | ---: |"]
    for name in [*candidate, *(k for k in champion if k not in candidate)]:
        ours, theirs = candidate.get(name), champion.get(name)
        both = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (ours, theirs))
        delta = _cell(ours - theirs, signed=True) if both else "—"
        lines.append(f"| {name} | {_cell(ours)} | {_cell(theirs)} | {delta} |")
    return "\n".join(lines) + "\n"
