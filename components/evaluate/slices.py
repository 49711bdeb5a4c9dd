"""Per-slice quality and fairness gaps of one model's scores on the test table.

A model can be good overall and bad for one group: the overall ROC AUC hides a segment whose
positives are all missed. The gate therefore looks at slices — each value of a categorical
column, or a numeric column cut into quantile bins — and at the largest gap between the groups
of one column in true-positive rate (equal opportunity), false-positive rate and selection rate
(demographic parity), the figures Fairlearn's `MetricFrame` gives.

The candidate and the champion are sliced separately but must be cut the same way: the
candidate's result records each numeric column's cut points, and passing them back as that
column's bins (`recorded_bins`) cuts the champion's rows identically. A slice below `min_rows`
is still reported, marked `too_small`, and left out of the gaps: a handful of rows says nothing
about a group. Results are plain dicts of str/int/float/bool/None/list, ready for JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict

import numpy as np
import pandas as pd

from ctloop.components.evaluate.metrics import roc_auc
from ctloop.components.gate.policy import GAP_METRICS

DECISION_THRESHOLD = 0.5
MISSING = "(missing)"


class SliceError(ValueError):
    """A slice column, label or score that per-slice metrics cannot be computed from."""


class SliceMetrics(TypedDict):
    """One group's figures; a rate is None where its denominator is empty."""

    group: str
    rows: int
    positives: int
    too_small: bool
    roc_auc: float | None
    accuracy: float
    tpr: float | None
    fpr: float | None
    selection_rate: float


class GroupGap(TypedDict):
    """The largest difference of one metric between two judged groups of a column."""

    metric: str
    gap: float
    low_group: str
    low_value: float
    high_group: str
    high_value: float


class ColumnSlices(TypedDict):
    column: str
    kind: Literal["categorical", "numeric"]
    cut_points: list[float] | None
    slices: list[SliceMetrics]
    gaps: dict[str, GroupGap | None]


def recorded_bins(result: Sequence[ColumnSlices]) -> dict[str, list[float]]:
    """The numeric columns' cut points of a result, to cut another model's rows the same way."""
    return {c["column"]: c["cut_points"] for c in result if c["cut_points"] is not None}


def slice_metrics(
    table: pd.DataFrame,
    labels: Any,
    scores: Any,
    *,
    categorical: Sequence[str] = (),
    numeric: Mapping[str, int | Sequence[float]] | None = None,
    min_rows: int = 30,
    max_categories: int = 50,
    threshold: float = DECISION_THRESHOLD,
) -> list[ColumnSlices]:
    """Metrics per group of each slice column, and the largest gap between groups.

    Args:
        table: the test rows, holding at least the slice columns.
        labels: binary labels (0/1), one per row.
        scores: the model's probabilities, one per row; `score >= threshold` is positive.
        categorical: columns whose every value is a group (missing values form one group).
        numeric: column -> number of quantile bins, or the cut points to use (a recorded
            result's, see `recorded_bins`); bin i holds cut[i-1] <= x < cut[i], the end bins
            are open, missing values form one group.
        min_rows: groups with fewer rows are reported as `too_small` and not judged.
        max_categories: a categorical column with more distinct values is refused.

    Raises:
        SliceError: an unknown or unusable column (named), no rows, bad labels or scores.
    """
    numeric = dict(numeric or {})
    y, predicted, s = _checked_inputs(table, labels, scores, threshold)
    for column in [*categorical, *numeric]:
        if column not in table.columns:
            raise SliceError(
                f"slice column {column!r} is not in the table; its columns: "
                + ", ".join(map(str, table.columns))
            )
    if set(categorical) & set(numeric):
        raise SliceError(f"slice columns {sorted(set(categorical) & set(numeric))} are both kinds")
    if min_rows < 1:
        raise SliceError(f"min_rows = {min_rows} must be >= 1")
    outcome = (y, predicted, s, min_rows)
    results = [
        _column_result(
            column,
            "categorical",
            None,
            *_categorical_groups(table[column], column, max_categories),
            *outcome,
        )
        for column in categorical
    ]
    for column, bins in numeric.items():
        groups, order, cuts = _numeric_groups(table[column], column, bins)
        results.append(_column_result(column, "numeric", cuts, groups, order, *outcome))
    return results


def _checked_inputs(
    table: pd.DataFrame, labels: Any, scores: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(table) == 0:
        raise SliceError("no rows to slice")
    if y.size != len(table) or s.size != len(table):
        raise SliceError(f"table ({len(table)}), labels ({y.size}), scores ({s.size}) differ")
    if np.setdiff1d(np.unique(y), [0.0, 1.0]).size:
        raise SliceError("slice metrics need binary labels (0 or 1)")
    if not np.isfinite(s).all():
        raise SliceError("scores contain NaN or infinite values")
    return y.astype(np.int8), s >= threshold, s


def _categorical_groups(
    values: pd.Series, column: str, max_categories: int
) -> tuple[np.ndarray, list[str]]:
    """Each row's group as an index into the groups (values by name as text, missing last)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    # Values that print alike (1 and "1") are one group, as they are one category in training.
    names, merged = np.unique(
        np.asarray([str(u) for u in uniques], dtype=object), return_inverse=True
    )
    if names.size > max_categories:
        raise SliceError(
            f"slice column {column!r} has {names.size} distinct values, more than "
            f"{max_categories}: slice it as numeric or raise max_categories"
        )
    index = np.append(merged, names.size)[codes]  # the sentinel -1 picks the missing group
    return index, [*names.tolist(), MISSING]


def _numeric_groups(
    values: pd.Series, column: str, bins: int | Sequence[float]
) -> tuple[np.ndarray, list[str], list[float]]:
    """Each row's group as an index into the groups (bins in order, missing last), and the cut
    points used."""
    try:
        x = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as err:
        raise SliceError(f"numeric slice column {column!r} holds non-numbers") from err
    present = ~np.isnan(x)
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool):
        if bins < 1:
            raise SliceError(f"numeric slice column {column!r}: bins = {bins} must be >= 1")
        if not present.any():
            raise SliceError(f"numeric slice column {column!r} has no values to bin")
        # Quantile cuts; ties (a value covering several quantiles) merge bins.
        cuts = np.unique(np.quantile(x[present], np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    else:
        cuts = np.asarray(list(bins), dtype=np.float64)
        if not (np.isfinite(cuts).all() and np.all(np.diff(cuts) > 0)):
            raise SliceError(f"numeric slice column {column!r}: cut points must increase")
    labels = _bin_labels(cuts)
    index = np.searchsorted(cuts, np.where(present, x, 0.0), side="right")
    index = np.where(present, index, len(labels))
    return index, [*labels, MISSING], [float(c) for c in cuts]


def _bin_labels(cuts: np.ndarray) -> list[str]:
    if cuts.size == 0:
        return ["all"]
    text = [f"{c:.6g}" for c in cuts]
    middle = [f"[{a}, {b})" for a, b in zip(text[:-1], text[1:], strict=True)]
    return [f"< {text[0]}", *middle, f">= {text[-1]}"]


def _column_result(
    column: str,
    kind: Literal["categorical", "numeric"],
    cuts: list[float] | None,
    groups: np.ndarray,
    order: list[str],
    y: np.ndarray,
    predicted: np.ndarray,
    s: np.ndarray,
    min_rows: int,
) -> ColumnSlices:
    """Groups in `order` (categories by name, bins by value, missing last); empty ones left out.

    `groups` holds each row's index into `order`: one sort finds every group's rows, where a
    comparison per group would read all rows once per group.
    """
    rows = np.argsort(groups, kind="stable")  # row numbers, those of one group together
    bounds = np.searchsorted(groups[rows], np.arange(len(order) + 1))
    slices = []
    for code, name in enumerate(order):
        members = rows[bounds[code] : bounds[code + 1]]
        if members.size:
            slices.append(
                _group_metrics(name, y[members], predicted[members], s[members], min_rows)
            )
    return {
        "column": column,
        "kind": kind,
        "cut_points": cuts,
        "slices": slices,
        "gaps": {metric: _largest_gap(slices, metric) for metric in GAP_METRICS},
    }


def _group_metrics(
    group: str, y: np.ndarray, predicted: np.ndarray, s: np.ndarray, min_rows: int
) -> SliceMetrics:
    positives = int(y.sum())
    negatives = y.size - positives
    tp = int(np.sum(predicted & (y == 1)))
    fp = int(np.sum(predicted & (y == 0)))
    return {
        "group": group,
        "rows": int(y.size),
        "positives": positives,
        "too_small": bool(y.size < min_rows),
        "roc_auc": roc_auc(y, s) if positives and negatives else None,
        "accuracy": float(np.mean(predicted == (y == 1))),
        "tpr": tp / positives if positives else None,
        "fpr": fp / negatives if negatives else None,
        "selection_rate": float(np.mean(predicted)),
    }


def _largest_gap(slices: Sequence[SliceMetrics], metric: str) -> GroupGap | None:
    """Highest minus lowest value among judged groups; None with fewer than two of them."""
    judged = [m for m in slices if not m["too_small"] and m[metric] is not None]
    if len(judged) < 2:
        return None
    low = min(judged, key=lambda m: m[metric])
    high = max(judged, key=lambda m: m[metric])
    low_value, high_value = float(low[metric]), float(high[metric])
    return {
        "metric": metric,
        "gap": high_value - low_value,
        "low_group": low["group"],
        "low_value": low_value,
        "high_group": high["group"],
        "high_value": high_value,
    }
