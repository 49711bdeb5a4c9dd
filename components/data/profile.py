"""Building the reference profile: what drift monitoring needs to know about the training data.

Computed once at training time and logged with the model, it is all that drift needs: bins
and bin shares for numeric features, category shares for categorical ones, missing rates, and
(added at evaluation) the distribution of the model's predictions and, for a binary model, the
calibration of its scores with the test metrics (`calibration`). Drift never re-reads the
training set. The format, and how it is read back, is the model contract's
(`ctloop.components.contract.profile`); the bins are defined here, by `bin_index`, and counted
the same way everywhere (`bin_counts`).
"""

import copy

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.contract.profile import PROFILE_FORMAT, ProfileError, ReferenceProfile
from ctloop.components.data.calibration import score_calibration
from ctloop.components.data.validation import TASKS, DataValidationError


def reference_profile(
    table: pa.Table,
    target: str,
    task: str,
    features: list[str],
    categorical_features: list[str],
    label_mapping: dict | None,
    bins: int = 10,
) -> ReferenceProfile:
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


def profile_table(table: pa.Table, target: str = "", bins: int = 10) -> ReferenceProfile:
    """A reference profile of every numeric, boolean and text column but `target`.

    Unlike training's validation, constant and mostly-missing columns are kept: a column
    that was constant can still start to vary. Columns of other types (dates, lists) are
    left out.
    """
    features = [f.name for f in table.schema if f.name != target and _kind(f.type)]
    categorical = [f.name for f in table.schema if f.name in features and _kind(f.type) == "text"]
    if not features:
        raise ProfileError(
            f"the reference has no numeric or text column besides {target!r} to compare; "
            f"its columns are {table.column_names}"
        )
    task = "binary"
    if target and target in table.column_names:
        distinct = pc.count_distinct(table.column(target)).as_py()
        task = "binary" if distinct <= 2 else "regression"
    return reference_profile(table, target, task, features, categorical, None, bins)


def bin_index(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bin of each value: [e_i, e_{i+1}) except the last bin, which is closed.

    Values below the first edge fall in the first bin and values above the last edge in the
    last bin, so production values outside the training range still count. NaN gets -1.
    """
    edges = _bin_edges(edges)
    values = np.asarray(values, dtype=np.float64)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isnan(values), -1, index)


def bin_counts(edges: list[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
    """Non-NaN values per bin (int64), exactly as `bin_index` bins them, several times faster.

    `bin_index` puts v in bin i when e_i <= v < e_{i+1}, clipped to the first and last bins,
    so the values of bins 0..i are those below the inner edge e_{i+1}: counting the values
    below each inner edge and taking differences (the last bin holds every other non-NaN
    value) gives its counts with one vectorised comparison per edge instead of a binary
    search per value. Edges that are not strictly increasing (or hold NaN) go through
    `bin_index` itself.
    """
    edges = _bin_edges(edges)
    values = np.asarray(values, dtype=np.float64)
    if not np.all(edges[1:] > edges[:-1]):
        index = bin_index(edges, values)
        return np.bincount(index[index >= 0], minlength=len(edges) - 1)
    below = [np.count_nonzero(values < edge) for edge in edges[1:-1]]
    present = np.count_nonzero(~np.isnan(values))
    return np.diff(np.array([0, *below, present], dtype=np.int64))


def histogram(edges: list[float] | np.ndarray, values: np.ndarray) -> list[float]:
    """Share of the non-NaN values in each bin (all zeros when there are none)."""
    counts = bin_counts(edges, values)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) - 1)


def quantile_edges(values: np.ndarray, bins: int) -> list[float]:
    """Strictly increasing bin edges for the non-NaN `values`.

    Many distinct values: quantiles at linspace(0, 1, bins + 1), de-duplicated. At most `bins`
    distinct values (flags, small counts): one bin per value, with edges halfway between
    neighbours, because quantile edges would merge the top values into the closed last bin
    (a 0/1 flag would get a single bin, and drift in it would be invisible). One distinct
    value: a single bin from that value to the next float above it. No values: [].

    The quantiles come first, without a sort: when they are all distinct and the order
    statistics they interpolate hold more than `bins` distinct values, those quantiles are
    the edges; only otherwise (quantiles merged by ties, or few values) are the distinct
    values counted.
    """
    values = np.asarray(values, dtype=np.float64)
    present = values[~np.isnan(values)] if np.isnan(values).any() else values
    if len(present) == 0:
        return []
    quantiles, interpolated = _linear_quantiles(present, np.linspace(0.0, 1.0, bins + 1))
    edges = np.unique(quantiles)
    if len(edges) == bins + 1 and len(np.unique(interpolated)) > bins:
        return edges.tolist()
    distinct = np.unique(pc.unique(pa.array(present)).to_numpy())
    if len(distinct) == 1:
        return [float(distinct[0]), float(np.nextafter(distinct[0], np.inf))]
    if len(distinct) <= bins:
        middles = (distinct[:-1] + distinct[1:]) / 2
        return [float(distinct[0]), *middles.tolist(), float(distinct[-1])]
    return edges.tolist()


def with_prediction_distribution(
    profile: dict, scores: np.ndarray, labels: np.ndarray | None = None, *, bins: int = 20
) -> dict:
    """A copy of `profile` with the distribution of the model's scores as "prediction".

    Binary probabilities use fixed edges linspace(0, 1, bins + 1), so a champion and a
    challenger are binned alike; regression predictions use quantile edges. Given the test
    split's labels (0/1, in the scores' order), a binary profile also gains "calibration":
    the scores' calibration checked on those labels and the test metrics, which is what
    estimating the model's quality on an unlabelled window needs
    (`ctloop.components.data.calibration.score_calibration`); labels of a regression are
    not needed and left out.

    Raises:
        CalibrationError: labels given for a binary profile that are not 0/1, of another
            length than the scores, of one class only, or scores outside [0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    binary = profile.get("task") == "binary"
    if binary:
        edges = np.linspace(0.0, 1.0, bins + 1).tolist()
    else:
        edges = quantile_edges(scores, bins)
    scored = copy.deepcopy(profile)
    scored["prediction"] = {
        "bin_edges": edges,
        "bin_frequencies": histogram(edges, scores) if edges else [],
    }
    if binary and labels is not None:
        scored["calibration"] = score_calibration(labels, scores)
    return scored


def _present_values(column: pa.ChunkedArray) -> np.ndarray:
    """The column as float64, nulls and NaN left out (in row order)."""
    values = pc.drop_null(pc.cast(column, pa.float64())).to_numpy()
    nan = np.isnan(values)
    return values[~nan] if nan.any() else values


def _numeric_profile(column: pa.ChunkedArray, bins: int) -> dict:
    present = _present_values(column)
    edges = quantile_edges(present, bins)
    has_values = len(present) > 0
    return {
        "kind": "numeric",
        "count": len(column),
        "missing_rate": _share(len(column) - len(present), len(column)),
        "bin_edges": edges,
        "bin_frequencies": histogram(edges, present) if edges else [],
        "min": float(present.min()) if has_values else None,
        "max": float(present.max()) if has_values else None,
        "mean": float(present.mean()) if has_values else None,
        "std": float(present.std()) if has_values else None,
    }


def _categorical_profile(column: pa.ChunkedArray) -> dict:
    labels = pc.cast(column, pa.string())
    counts = pc.value_counts(labels)
    counts = counts.filter(counts.field("values").is_valid())
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


def _bin_edges(edges: list[float] | np.ndarray) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2:
        raise ValueError(f"bin edges need at least two values; got {edges.tolist()}")
    return edges


def _linear_quantiles(
    values: np.ndarray, probabilities: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`np.quantile(values, probabilities)` bit for bit, and the order statistics it used.

    numpy's default (linear) quantile at q is the order statistic at h = (n - 1) q, or,
    when h is not whole, the interpolation between the order statistics floor(h) and
    floor(h) + 1 at h - floor(h). Those few order statistics are selected without sorting
    (`_order_statistics`), and each interpolation is `np.quantile` of its two neighbours at
    h - floor(h): the very arithmetic numpy applies to the whole array. `values` must hold
    no NaN.
    """
    count = len(values)
    positions = (count - 1) * probabilities
    lower = np.floor(positions).astype(np.intp)
    upper = np.minimum(lower + 1, count - 1)
    ranks = np.unique(np.concatenate([lower, upper]))
    statistics = dict(zip(ranks.tolist(), _order_statistics(values, ranks).tolist(), strict=True))
    # At h >= n - 1 numpy interpolates the largest value with itself, as [x, x] at 1 does.
    quantiles = np.array(
        [
            np.quantile(np.array([statistics[low], statistics[high]]), position - low)
            if low < count - 1
            else np.quantile(np.array([statistics[low], statistics[low]]), 1.0)
            for low, high, position in zip(
                lower.tolist(), upper.tolist(), positions.tolist(), strict=True
            )
        ]
    )
    return quantiles, np.array(list(statistics.values()))


_SELECT_BY_PARTITION = 4_096
"""Below this many values an order statistic is taken by `np.partition` directly."""

_MAX_BUCKETS = 1 << 16


def _order_statistics(values: np.ndarray, ranks: np.ndarray, depth: int = 0) -> np.ndarray:
    """The values at the (sorted, 0-based) `ranks` of sorted `values`, without sorting them.

    One pass spreads the values over equal-width buckets between their min and max. That map
    is monotone, so every value of a bucket lies between the values of the buckets on
    either side, and the bucket counts say which bucket holds each rank and at which rank
    within it: only those few buckets' values are then searched (bucketed again when one
    still holds many values, as the body of a long-tailed column does).
    """
    if len(values) <= _SELECT_BY_PARTITION or depth >= 4:
        return np.partition(values, ranks)[ranks]
    low, high = values.min(), values.max()
    if low == high:
        return np.full(len(ranks), low)
    buckets = min(_MAX_BUCKETS, len(values) // 8)
    scale = buckets / (high - low)
    if not np.isfinite(scale) or scale <= 0.0:  # infinite values or a subnormal range
        return np.partition(values, ranks)[ranks]
    index = ((values - low) * scale).astype(np.intp)
    np.minimum(index, buckets - 1, out=index)
    ends = np.cumsum(np.bincount(index, minlength=buckets))
    holders = np.searchsorted(ends, ranks, side="right")
    wanted = np.zeros(buckets, dtype=bool)
    wanted[holders] = True
    chosen = wanted[index]
    members, member_buckets = values[chosen], index[chosen]
    result = np.empty(len(ranks), dtype=values.dtype)
    for bucket in np.unique(holders):
        here = holders == bucket
        start = ends[bucket - 1] if bucket else 0
        inside = members[member_buckets == bucket]
        result[here] = _order_statistics(inside, ranks[here] - start, depth + 1)
    return result


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _kind(kind: pa.DataType) -> str | None:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    ):
        return "number"
    return None
