"""The model's quality on a window's labelled rows, and its change from a baseline.

Drift says the inputs moved; quality says whether that hurt. Labels often arrive with the
window (a churn flag a month later), so when the window holds the label column and the model's
scores are at hand, the metrics of evaluation are measured on it too. The reference profile
records the training data and the test split's score distribution, not evaluation's metrics, so
a change is reported only against baseline metrics that are given; without them the report
says so instead of comparing with nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.checks import is_finite_number
from ctloop.components.drift.window_profile import WindowProfileError
from ctloop.components.evaluate.metrics import classification_metrics, regression_metrics
from ctloop.components.json_parameter import parse_json_object


class BaselineMetricsError(ValueError):
    """Baseline metrics that are not a JSON object of numbers."""


def parse_baseline_metrics(text: str) -> dict[str, float] | None:
    """The baseline metrics JSON object (name -> number); None when `text` is blank."""
    if not text.strip():
        return None
    metrics = parse_json_object(text, "baseline_metrics", BaselineMetricsError)
    wrong = {name: value for name, value in metrics.items() if not is_finite_number(value)}
    if wrong:
        raise BaselineMetricsError(f"baseline_metrics values must be finite numbers; got {wrong}")
    return {name: float(value) for name, value in metrics.items()}


def window_quality(
    profile: Mapping[str, Any],
    target: str,
    labels: list[pa.Array],
    scores: np.ndarray | None,
    rows: int,
    baseline: Mapping[str, float] | None,
    notes: list[str],
) -> dict[str, Any] | None:
    """The window's metrics (with changes from `baseline`), or None when not measurable.

    What could not be measured (no label column, no scores) is said in `notes`, not raised:
    a window without labels is the usual case, not an error.
    """
    if not target:
        return None
    if not labels:
        notes.append(f"the window has no {target!r} column: the model's quality not measured")
        return None
    if scores is None:
        notes.append(f"no predictions given: the model's quality on {target!r} not measured")
        return None
    if len(scores) != rows:
        raise WindowProfileError(
            f"the predictions have {len(scores)} rows and the window {rows}: quality needs "
            "the scores of the window's rows, in the same order"
        )
    try:
        window = quality(profile, pa.chunked_array(labels), scores)
    except ValueError as error:
        notes.append(f"the model's quality on the window not measured: {error}")
        return None
    performance: dict[str, Any] = dict(window)
    if baseline is None:
        performance["baseline"] = "none given: the reference profile records no evaluation metrics"
        notes.append(
            "quality not compared with a baseline: the reference profile records no "
            "evaluation metrics (pass the evaluation's metrics as baseline_metrics)"
        )
        return performance
    for name, value in baseline.items():
        if name in window:
            performance[f"{name}_baseline"] = value
            performance[f"{name}_change"] = window[name] - value
    return performance


def quality(
    profile: Mapping[str, Any], column: pa.ChunkedArray | pa.Array, scores: np.ndarray
) -> dict[str, float]:
    """The model's metrics on the labelled rows (missing labels are left out)."""
    labels = label_values(profile, column)
    labelled = ~np.isnan(labels)
    if profile.get("task") == "regression":
        metrics = regression_metrics(labels[labelled], scores[labelled])
    else:
        metrics = classification_metrics(labels[labelled], scores[labelled])
    return {"labelled_rows": int(labelled.sum()), **metrics}


def label_values(profile: Mapping[str, Any], column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Labels as floats (NaN where missing); string labels through the profile's mapping."""
    mapping = profile.get("label_mapping")
    if not mapping:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    text = pc.cast(column, pa.string())
    position = pc.index_in(text, value_set=pa.array(list(mapping), pa.string()))
    unknown = pc.filter(text, pc.and_(pc.is_null(position), pc.is_valid(text)))
    if len(unknown):
        raise WindowProfileError(
            f"label(s) {sorted(set(unknown.to_pylist()))[:10]} are not among the model's "
            f"labels {list(mapping)}"
        )
    codes = np.asarray([float(code) for code in mapping.values()] + [np.nan])
    return codes[pc.fill_null(position, len(mapping)).to_numpy(zero_copy_only=False)]
