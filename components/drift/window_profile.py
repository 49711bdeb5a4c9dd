"""A production window reduced, in one streaming pass, to the reference profile's histogram form.

Drift compares shares over the reference's own bins and categories, so a window is fully
described by counts: per reference bin (numeric), per reference category plus one pooled
"unseen" count (categorical), and the missing values. Reducing piece by piece keeps memory at
one piece plus the counts however long the window is, and because counts add,
`WindowProfile.merge` of parts (files, partitions, parallel tasks) equals the profile of the
whole. Bins are counted by `profile.bin_counts`, which counts exactly as `profile.bin_index`,
the very function that defines the reference's bins.

A Parquet window (`table_io.iter_batches`) is counted one column at a time, in batches of a
bounded number of rows, so memory is one column's pages and one batch of it whatever the
window's length, width and row-group size; a CSV window, which cannot be read by column, is
counted in blocks of rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.data.profile import bin_counts
from ctloop.components.table_io import ParquetBatches

UNSEEN_EXAMPLES = 10
"""How many never-seen category names a window keeps (the alphabetically first), for reports."""


class WindowProfileError(ValueError):
    """A window that cannot be compared with the reference profile (missing or mistyped column)."""


@dataclass(frozen=True)
class FeatureCounts:
    """One feature's counts in a window.

    Attributes:
        kind: "numeric" or "categorical", as in the reference profile.
        counts: Values per reference bin, or per reference category (profile key order).
        missing: Null / NaN values.
        values: Non-missing values (the sum of `counts` and `unseen` when the reference has
            bins; a numeric feature the reference never saw a value of has no bins).
        unseen: Categorical values in a category the reference never saw.
        unseen_examples: The alphabetically first `UNSEEN_EXAMPLES` of those categories.
    """

    kind: str
    counts: np.ndarray
    missing: int
    values: int
    unseen: int = 0
    unseen_examples: tuple[str, ...] = ()

    def merge(self, other: FeatureCounts) -> FeatureCounts:
        """The counts of both parts together."""
        if self.kind != other.kind or len(self.counts) != len(other.counts):
            raise WindowProfileError(
                f"cannot merge {self.kind} counts over {len(self.counts)} bins with "
                f"{other.kind} counts over {len(other.counts)} bins: not the same reference"
            )
        return FeatureCounts(
            kind=self.kind,
            counts=self.counts + other.counts,
            missing=self.missing + other.missing,
            values=self.values + other.values,
            unseen=self.unseen + other.unseen,
            unseen_examples=_first_names(self.unseen_examples, other.unseen_examples),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "counts": self.counts.tolist(),
            "missing": self.missing,
            "values": self.values,
            "unseen": self.unseen,
            "unseen_examples": list(self.unseen_examples),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> FeatureCounts:
        return cls(
            kind=document["kind"],
            counts=np.asarray(document["counts"], dtype=np.int64),
            missing=int(document["missing"]),
            values=int(document["values"]),
            unseen=int(document.get("unseen", 0)),
            unseen_examples=tuple(document.get("unseen_examples", ())),
        )


@dataclass(frozen=True)
class WindowProfile:
    """A window's row count and per-feature counts (and the model scores' counts, if any)."""

    rows: int
    features: dict[str, FeatureCounts]
    prediction: FeatureCounts | None = field(default=None)

    def merge(self, other: WindowProfile) -> WindowProfile:
        """The profile of both windows together: equal to profiling their rows at once."""
        if self.features.keys() != other.features.keys():
            raise WindowProfileError(
                f"cannot merge window profiles of different features: "
                f"{sorted(self.features)} vs {sorted(other.features)}"
            )
        if (self.prediction is None) != (other.prediction is None):
            raise WindowProfileError(
                "cannot merge a window profile with prediction counts and one without"
            )
        return WindowProfile(
            rows=self.rows + other.rows,
            features={
                name: counts.merge(other.features[name]) for name, counts in self.features.items()
            },
            prediction=self.prediction.merge(other.prediction)
            if self.prediction is not None and other.prediction is not None
            else None,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for passing a partial window between pipeline steps)."""
        return {
            "rows": self.rows,
            "features": {name: counts.to_json() for name, counts in self.features.items()},
            "prediction": self.prediction.to_json() if self.prediction is not None else None,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> WindowProfile:
        prediction = document.get("prediction")
        return cls(
            rows=int(document["rows"]),
            features={
                name: FeatureCounts.from_json(counts)
                for name, counts in document["features"].items()
            },
            prediction=FeatureCounts.from_json(prediction) if prediction is not None else None,
        )


def window_profile(
    batches: Iterable[pa.RecordBatch],
    reference_profile: Mapping[str, Any],
    *,
    score_column: str | None = None,
) -> WindowProfile:
    """Count the window's values per reference bin and category, piece by piece.

    Args:
        batches: The window's record batches (a pa.Table's `to_batches()`, or `iter_batches`,
            whose Parquet windows are read one column at a time). Columns other than the
            profiled features (and `score_column`) are ignored.
        reference_profile: The champion's `ctloop.reference_profile/v1` profile.
        score_column: Column holding the model's scores, counted over the profile's
            "prediction" bins.

    Raises:
        WindowProfileError: the window lacks a profiled feature or the score column, a numeric
            column holds values that are not numbers, or scores are asked for and the profile
            has no prediction distribution.
    """
    features = reference_profile["features"]
    counters = {name: _counter(name, spec) for name, spec in features.items()}
    columns: _Columns = [(name, counter, "profiled feature") for name, counter in counters.items()]
    scores = None
    if score_column is not None:
        scores = _NumericCounter(score_column, _prediction_edges(reference_profile))
        columns.append((score_column, scores, "score column"))
    if isinstance(batches, ParquetBatches):
        rows = _count_by_column(batches, columns)
    else:
        rows = _count_by_batch(batches, columns)
    return WindowProfile(
        rows=rows,
        features={name: counter.result() for name, counter in counters.items()},
        prediction=scores.result() if scores is not None else None,
    )


def prediction_counts(reference_profile: Mapping[str, Any], scores: np.ndarray) -> FeatureCounts:
    """Model scores counted over the reference profile's "prediction" bins."""
    counter = _NumericCounter("scores", _prediction_edges(reference_profile))
    counter.add(pa.array(np.asarray(scores, dtype=np.float64).ravel()))
    return counter.result()


def _count_by_batch(batches: Iterable[pa.RecordBatch], columns: _Columns) -> int:
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for name, counter, what in columns:
            counter.add(_column(batch, name, what))
    return rows


def _count_by_column(batches: ParquetBatches, columns: _Columns) -> int:
    for name, _, what in columns:
        if name not in batches.schema.names:
            raise _absent_column(name, what, batches.schema.names)
    for name, counter, _ in columns:
        categorical = isinstance(counter, _CategoricalCounter)
        for array in batches.column(name, as_dictionary=categorical):
            counter.add(array)
    return batches.num_rows


class _NumericCounter:
    def __init__(self, name: str, edges: list[float]) -> None:
        self.name = name
        self.edges = np.asarray(edges, dtype=np.float64)
        self.counts = np.zeros(max(len(edges) - 1, 0), dtype=np.int64)
        self.rows = 0
        self.values = 0

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        try:
            floats = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise WindowProfileError(
                f"column {self.name!r} is numeric in the reference profile but holds "
                f"{column.type} values that are not numbers: {error}"
            ) from error
        if floats.null_count:
            floats = pc.fill_null(floats, math.nan)
        chunks = floats.chunks if isinstance(floats, pa.ChunkedArray) else [floats]
        for chunk in chunks:
            values = chunk.to_numpy()  # float64 without nulls: no copy
            self.rows += len(values)
            if len(self.counts):
                counts = bin_counts(self.edges, values)
                self.counts += counts
                self.values += int(counts.sum())
            else:
                self.values += int(np.count_nonzero(~np.isnan(values)))

    def result(self) -> FeatureCounts:
        return FeatureCounts(
            kind="numeric",
            counts=self.counts.copy(),
            missing=self.rows - self.values,
            values=self.values,
        )


class _CategoricalCounter:
    def __init__(self, name: str, categories: list[str]) -> None:
        self.name = name
        self.categories = pa.array(categories, type=pa.string())
        self.counts = np.zeros(len(categories), dtype=np.int64)
        self.missing = 0
        self.values = 0
        self.unseen_examples: tuple[str, ...] = ()

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        for chunk in column.chunks if isinstance(column, pa.ChunkedArray) else [column]:
            labels, counts = _label_counts(chunk)
            missing = int(counts[labels.is_null().to_numpy(zero_copy_only=False)].sum())
            self.missing += missing
            self.values += len(chunk) - missing
            index = pc.fill_null(pc.index_in(labels, value_set=self.categories), -1).to_numpy()
            seen = index >= 0
            np.add.at(self.counts, index[seen], counts[seen])
            unseen = labels.filter(pc.and_(pa.array(~seen), labels.is_valid()))
            if len(unseen):
                names = tuple(str(name) for name in unseen.to_pylist())
                self.unseen_examples = _first_names(self.unseen_examples, names)

    def result(self) -> FeatureCounts:
        seen = self.counts.copy()
        return FeatureCounts(
            kind="categorical",
            counts=seen,
            missing=self.missing,
            values=self.values,
            unseen=self.values - int(seen.sum()),
            unseen_examples=self.unseen_examples,
        )


_Columns = list[tuple[str, _NumericCounter | _CategoricalCounter, str]]
"""(column name, its counter, what the column is for errors)."""


def _label_counts(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """The distinct values of `array` as text (null: missing) and how often each occurs.

    Counting distinct values first leaves only a few labels to match with the reference's
    categories; dictionary arrays (Parquet text) are counted by their indices.
    """
    if pa.types.is_dictionary(array.type):
        size = len(array.dictionary)
        indices = array.indices
        if indices.null_count:
            indices = pc.fill_null(indices, size)
        counts = np.bincount(indices.to_numpy(), minlength=size + 1)
        labels = pa.concat_arrays(
            [pc.cast(array.dictionary, pa.string()), pa.nulls(1, pa.string())]
        )
        occurring = counts > 0
        return labels.filter(pa.array(occurring)), counts[occurring]
    counted = pc.value_counts(array)
    return pc.cast(counted.field("values"), pa.string()), counted.field("counts").to_numpy()


def _counter(name: str, spec: Mapping[str, Any]) -> _NumericCounter | _CategoricalCounter:
    if spec["kind"] == "categorical":
        return _CategoricalCounter(name, list(spec["categories"]))
    return _NumericCounter(name, spec["bin_edges"])


def _prediction_edges(reference_profile: Mapping[str, Any]) -> list[float]:
    prediction = reference_profile.get("prediction")
    if not prediction or not prediction.get("bin_edges"):
        raise WindowProfileError(
            "scores were given but the reference profile has no 'prediction' bins "
            "(add them at evaluation with profile.with_prediction_distribution)"
        )
    return prediction["bin_edges"]


def _column(batch: pa.RecordBatch, name: str, what: str) -> pa.Array:
    index = batch.schema.get_field_index(name)
    if index < 0:
        raise _absent_column(name, what, batch.schema.names)
    return batch.column(index)


def _absent_column(name: str, what: str, names: list[str]) -> WindowProfileError:
    return WindowProfileError(
        f"the window has no column {name!r} ({what}); its columns are {names}"
    )


def _first_names(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    # The first k names of a union are the first k of the union of each part's first k,
    # which is what makes merged examples equal the whole window's.
    return tuple(sorted(set(first) | set(second))[:UNSEEN_EXAMPLES])
