"""The reference profile: what drift monitoring needs to know about the training data.

Computed once at training time and logged with the model, it is all that drift needs: bins
and bin shares for numeric features, category shares for categorical ones, missing rates, and
(added at evaluation) the distribution of the model's predictions. Drift never re-reads the
training set. The format is the shared contract `ctloop.reference_profile/v1`.
"""

import copy

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.data.validation import TASKS, DataValidationError

PROFILE_FORMAT = "ctloop.reference_profile/v1"


def reference_profile(
    table: pa.Table,
    target: str,
    task: str,
    features: list[str],
    categorical_features: list[str],
    label_mapping: dict | None,
    bins: int = 10,
) -> dict:
    """Profile the validated training table (JSON-able, plain Python values).

    Each feature's `count` is the rows profiled, missing values included (so
    `count * missing_rate` is the number missing); bin and category shares are shares of the
    non-missing values.

    Args:
        table: The validated table.
        target: Label column (recorded, not profiled as a feature).
        task: "binary" or "regression".
        features: Feature columns in training order (becomes `feature_order`).
        categorical_features: The subset of `features` profiled as categories.
        label_mapping: Source label -> 0/1, or None.
        bins: Most quantile bins per numeric feature.

    Raises:
        DataValidationError: unknown task, a feature or categorical feature not in the
            table / feature list, or bins < 1.
    """
    if task not in TASKS:
        raise DataValidationError(f"task {task!r} is not supported; use one of {list(TASKS)}")
    if bins < 1:
        raise DataValidationError(f"bins must be at least 1; got {bins}")
    missing = [name for name in features if name not in table.column_names]
    if missing:
        raise DataValidationError(
            f"feature(s) {missing} not in table; columns are {table.column_names}"
        )
    unknown = [name for name in categorical_features if name not in features]
    if unknown:
        raise DataValidationError(f"categorical feature(s) {unknown} are not in features")
    categorical = set(categorical_features)
    return {
        "format": PROFILE_FORMAT,
        "target": target,
        "task": task,
        "row_count": table.num_rows,
        "label_mapping": dict(label_mapping) if label_mapping is not None else None,
        "feature_order": list(features),
        "features": {
            name: _categorical_profile(table.column(name))
            if name in categorical
            else _numeric_profile(table.column(name), bins)
            for name in features
        },
    }


def bin_index(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: [e_i, e_{i+1}) except the last bin, which is closed.

    Values below the first edge fall in the first bin and values above the last edge in the
    last bin, so production values outside the training range still count. NaN gets -1.
    """
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2:
        raise ValueError(f"bin edges need at least two values; got {edges.tolist()}")
    values = np.asarray(values, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isnan(values), -1, index)


def histogram(edges: list[float] | np.ndarray, values: np.ndarray) -> list[float]:
    """Share of the non-NaN values in each bin (all zeros when there are none)."""
    index = bin_index(edges, values)
    counts = np.bincount(index[index >= 0], minlength=len(edges) - 1)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) - 1)


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Strictly increasing bin edges for the non-NaN `values`.

    Many distinct values: quantiles at linspace(0, 1, bins + 1), de-duplicated. At most `bins`
    distinct values (flags, small counts): one bin per value, with edges halfway between
    neighbours, because quantile edges would merge the top values into the closed last bin
    (a 0/1 flag would get a single bin, and drift in it would be invisible). One distinct
    value: a single bin from that value to the next float above it. No values: [].
    """
    present = values[~np.isnan(values)]
    distinct = np.unique(present)
    if len(distinct) == 0:
        return []
    if len(distinct) == 1:
        return [float(distinct[0]), float(np.nextafter(distinct[0], np.inf))]
    if len(distinct) <= bins:
        middles = (distinct[:-1] + distinct[1:]) / 2
        return [float(distinct[0]), *middles.tolist(), float(distinct[-1])]
    return np.unique(np.quantile(present, np.linspace(0.0, 1.0, bins + 1))).tolist()


def with_prediction_distribution(profile: dict, scores: np.ndarray, bins: int = 20) -> dict:
    """A copy of `profile` with the distribution of the model's scores as "prediction".

    Binary probabilities use fixed edges linspace(0, 1, bins + 1), so a champion and a
    challenger are binned alike; regression predictions use quantile edges.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if profile.get("task") == "binary":
        edges = np.linspace(0.0, 1.0, bins + 1).tolist()
    else:
        edges = quantile_edges(scores, bins)
    scored = copy.deepcopy(profile)
    scored["prediction"] = {
        "bin_edges": edges,
        "bin_frequencies": histogram(edges, scores) if edges else [],
    }
    return scored


def _as_float_array(column: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _numeric_profile(column: pa.ChunkedArray, bins: int) -> dict:
    values = _as_float_array(column)
    present = values[~np.isnan(values)]
    edges = quantile_edges(values, bins)
    has_values = len(present) > 0
    return {
        "kind": "numeric",
        "count": len(values),
        "missing_rate": _share(len(values) - len(present), len(values)),
        "bin_edges": edges,
        "bin_frequencies": histogram(edges, present) if edges else [],
        "min": float(present.min()) if has_values else None,
        "max": float(present.max()) if has_values else None,
        "mean": float(present.mean()) if has_values else None,
        "std": float(present.std()) if has_values else None,
    }


def _categorical_profile(column: pa.ChunkedArray) -> dict:
    labels = pc.cast(column, pa.string())
    counts = pc.value_counts(labels.drop_null())
    present = len(labels) - labels.null_count
    shares = {
        str(category): count / present
        for category, count in zip(
            counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True
        )
    }
    return {
        "kind": "categorical",
        "count": len(labels),
        "missing_rate": _share(labels.null_count, len(labels)),
        "categories": dict(sorted(shares.items())),
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
