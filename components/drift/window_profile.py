"""A production window reduced, in one streaming pass, to the reference profile's histogram form.

Drift compares shares over the reference's own bins and categories, so a window is fully
described by counts: per reference bin (numeric), per reference category plus one pooled
"unseen" count (categorical), and the missing values. Reducing record batch by record batch
keeps memory at one batch plus the counts however long the window is, and because counts add,
`WindowProfile.merge` of parts (files, partitions, parallel tasks) equals the profile of the
whole. Binning is `profile.bin_index`, the very function that built the reference's bins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_dataset

from ctloop.components.data.dataset_io import CSV_SUFFIXES, DatasetError
from ctloop.components.data.profile import bin_index

UNSEEN_EXAMPLES = 10
"""How many never-seen category names a window keeps (the alphabetically first), for reports."""

DEFAULT_BATCH_ROWS = 65_536


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
    """Count the window's values per reference bin and category, one batch at a time.

    Args:
        batches: The window's record batches (a pa.Table's `to_batches()`, or `iter_batches`).
            Columns other than the profiled features (and `score_column`) are ignored.
        reference_profile: The champion's `ctloop.reference_profile/v1` profile.
        score_column: Column holding the model's scores, counted over the profile's
            "prediction" bins.

    Raises:
        WindowProfileError: a batch lacks a profiled feature or the score column, a numeric
            column holds values that are not numbers, or scores are asked for and the profile
            has no prediction distribution.
    """
    features = reference_profile["features"]
    counters = {name: _counter(name, spec) for name, spec in features.items()}
    scores = None
    if score_column is not None:
        scores = _NumericCounter(score_column, _prediction_edges(reference_profile))
    rows = 0
    for batch in batches:
        rows += batch.num_rows
        for name, counter in counters.items():
            counter.add(_column(batch, name, "profiled feature"))
        if scores is not None and score_column is not None:
            scores.add(_column(batch, score_column, "score column"))
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


def iter_batches(
    uri: str, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet file or folder, or a CSV file, without reading it whole.

    Args:
        uri: Local path or any URI pyarrow has a filesystem for; CSV when the name ends in
            .csv / .csv.gz (empty cells are nulls, as in `read_table`), Parquet otherwise.
        columns: Columns to read (all when None).
        batch_rows: Most rows per batch.

    Raises:
        DatasetError: the URI cannot be opened or lacks a requested column.
    """
    location = uri if "://" in uri else os.path.abspath(uri)
    file_format: pa_dataset.FileFormat
    if uri.lower().endswith(CSV_SUFFIXES):
        options = pa_csv.ConvertOptions(strings_can_be_null=True)
        file_format = pa_dataset.CsvFileFormat(convert_options=options)
    else:
        file_format = pa_dataset.ParquetFileFormat()
    try:
        dataset = pa_dataset.dataset(location, format=file_format)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise DatasetError(f"dataset {uri!r} cannot be opened: {error}") from error
    absent = [name for name in columns or [] if name not in dataset.schema.names]
    if absent:
        raise DatasetError(
            f"dataset {uri!r} has no column(s) {absent}; columns are {dataset.schema.names}"
        )
    yield from dataset.to_batches(columns=columns, batch_size=batch_rows)


class _NumericCounter:
    def __init__(self, name: str, edges: list[float]) -> None:
        self.name = name
        self.edges = np.asarray(edges, dtype=np.float64)
        bins = max(len(edges) - 1, 0)
        # Slot 0 counts missing values, slot i + 1 bin i.
        self.slots = np.zeros(bins + 1, dtype=np.int64)
        self.values = 0

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise WindowProfileError(
                f"column {self.name!r} is numeric in the reference profile but holds "
                f"{column.type} values that are not numbers: {error}"
            ) from error
        missing = int(np.isnan(values).sum())
        self.values += len(values) - missing
        if len(self.slots) == 1:
            self.slots[0] += missing
            return
        self.slots += np.bincount(bin_index(self.edges, values) + 1, minlength=len(self.slots))

    def result(self) -> FeatureCounts:
        return FeatureCounts(
            kind="numeric",
            counts=self.slots[1:].copy(),
            missing=int(self.slots[0]),
            values=self.values,
        )


class _CategoricalCounter:
    def __init__(self, name: str, categories: list[str]) -> None:
        self.name = name
        self.categories = pa.array(categories, type=pa.string())
        # Slot 0 counts missing and unseen values together; unseen = values - seen.
        self.slots = np.zeros(len(categories) + 1, dtype=np.int64)
        self.missing = 0
        self.values = 0
        self.unseen_examples: tuple[str, ...] = ()

    def add(self, column: pa.Array | pa.ChunkedArray) -> None:
        labels = pc.cast(column, pa.string())
        missing = labels.null_count
        self.missing += missing
        self.values += len(labels) - missing
        index = pc.index_in(labels, value_set=self.categories)
        positions = pc.fill_null(index, -1).to_numpy(zero_copy_only=False) + 1
        self.slots += np.bincount(positions, minlength=len(self.slots))
        if index.null_count > missing:
            unseen = pc.filter(labels, pc.and_(pc.is_null(index), pc.is_valid(labels)))
            names = tuple(str(name) for name in pc.unique(unseen).to_pylist())
            self.unseen_examples = _first_names(self.unseen_examples, names)

    def result(self) -> FeatureCounts:
        seen = self.slots[1:].copy()
        return FeatureCounts(
            kind="categorical",
            counts=seen,
            missing=self.missing,
            values=self.values,
            unseen=self.values - int(seen.sum()),
            unseen_examples=self.unseen_examples,
        )


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
        raise WindowProfileError(
            f"the window has no column {name!r} ({what}); its columns are {batch.schema.names}"
        )
    return batch.column(index)


def _first_names(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    # The first k names of a union are the first k of the union of each part's first k,
    # which is what makes merged examples equal the whole window's.
    return tuple(sorted(set(first) | set(second))[:UNSEEN_EXAMPLES])
