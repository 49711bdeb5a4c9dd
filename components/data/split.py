"""Train / validation / test split: stratified and seeded by default, or by time.

Validation rows drive early stopping and test rows drive the quality gate, so each split must
look like the whole table: a binary label keeps its class shares in every split (to one row),
and a split that would be empty or miss a class fails here, before a model is trained on it
or judged by it.

The random split orders rows by a seeded hash of their content, not by a permutation of their
positions, so a row lands in the same split whatever else is in the table. That matters when
retraining appends a new window to the old data: the gate compares the candidate with the
champion on the candidate's test rows, and with a positional shuffle many of those rows would
be ones the champion trained on, favouring it. Ordered by hash, the old rows keep their places
(only rows at the cut points move, as the counts change), so the champion is judged on rows it
never saw. The same seed gives the same split.

Identical rows would share a hash, and so a split: on a coarse table (a few categorical
columns, hundreds of copies of each row) whole groups of copies would land in test alone, and
a feature combination seen with one label in train would be judged on the other label in
test. So the k-th copy of a row is hashed with k: copies spread over the splits in the asked
shares. Copies are indistinguishable, so which one counts as the k-th changes no split's rows:
the rows of each split still do not depend on row order. A row's first copy keeps the hash of
its values alone, and copies appended later get the next numbers, so the old copies keep their
places when a window is appended.
"""

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class SplitError(ValueError):
    """Fractions or data that cannot give three usable splits."""


SPLIT_NAMES = ("train", "validation", "test")
ROW_GROUP_ROWS = 128 * 1024
"""Rows per Parquet row group of the written splits. The distributed train step gives each
worker whole row groups (rank r of w: r, r+w, ...), so the train table needs at least as many
groups as there are workers; pyarrow's default of about a million rows a group gives a 2M-row
table's train split two. At 128k rows a million rows make eight groups, and reading costs
about the same (whole-table reads decode every group either way)."""


def split_table(
    table: pa.Table,
    target: str,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    stratify: bool = True,
    time_column: str | None = None,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Split `table` into (train, validation, test).

    The target is treated as binary when it is not floating point and has at most two
    distinct values (after validation: int 0/1); a float target is a regression target.

    Args:
        table: The validated table.
        target: Label column.
        validation_fraction: Share of rows for validation, in (0, 1).
        test_fraction: Share of rows for test, in (0, 1); the two sum to less than 1.
        seed: Key of the row hash; the same seed gives the same split.
        stratify: Order each class separately so every split keeps the class shares
            (binary targets only; ignored for regression).
        time_column: When set, sort by it instead: the oldest rows train, the newest test.

    Raises:
        SplitError: bad fractions, a missing or null target/time column, or a split that
            would be empty or (binary) lack a class.
    """
    _check_fractions(validation_fraction, test_fraction)
    labels = _column(table, target, "target")
    binary = not pa.types.is_floating(labels.type) and pc.count_distinct(labels).as_py() <= 2
    label_values = labels.to_numpy(zero_copy_only=False)
    sizes = (validation_fraction, test_fraction)
    if time_column is not None:
        order = pc.sort_indices(_column(table, time_column, "time_column")).to_numpy()
        parts = _cut(order, *sizes)
    elif stratify and binary:
        order = _hash_order(table, seed)
        _, codes = np.unique(label_values, return_inverse=True)
        per_class = [_cut(order[codes[order] == code], *sizes) for code in range(codes.max() + 1)]
        parts = tuple(np.sort(np.concatenate(split)) for split in zip(*per_class, strict=True))
    else:
        parts = tuple(np.sort(indices) for indices in _cut(_hash_order(table, seed), *sizes))
    _check_parts(parts, label_values if binary else None, table.num_rows, sizes)
    return tuple(table.take(indices) for indices in parts)


def _hash_order(table: pa.Table, seed: int) -> np.ndarray:
    """Row indices ordered by a hash, keyed by `seed`, of each row's values and its copy number.

    The copy number of a row is how many identical rows come before it; the first copy is
    hashed by its values alone, so a table without duplicates costs one sort, not two.
    """
    key = f"ctloop{seed:010d}"[-16:]  # pandas wants a 16-byte key
    hashes = pd.util.hash_pandas_object(table.to_pandas(), index=False, hash_key=key).to_numpy()
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    first = np.concatenate(([True], ranked[1:] != ranked[:-1]))
    if first.all():
        return order
    positions = np.arange(len(order))
    copies_before = positions - np.maximum.accumulate(np.where(first, positions, 0))
    later = order[copies_before > 0]
    renumbered = pd.DataFrame({"row": hashes[later], "copy": copies_before[copies_before > 0]})
    hashes[later] = pd.util.hash_pandas_object(renumbered, index=False, hash_key=key).to_numpy()
    return np.argsort(hashes, kind="stable")


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 < value < 1.0:
            raise SplitError(f"{name}={value} must be strictly between 0 and 1")
    if validation_fraction + test_fraction >= 1.0:
        raise SplitError(
            f"validation_fraction={validation_fraction} + test_fraction={test_fraction} "
            "must be less than 1, to leave rows to train on"
        )


def _column(table: pa.Table, name: str, role: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise SplitError(f"{role} column {name!r} not in table; columns are {table.column_names}")
    column = table.column(name)
    if column.null_count:
        raise SplitError(
            f"{role} column {name!r} has {column.null_count} missing value(s); "
            "every row must have one to be placed in a split"
        )
    return column


def _rounded(rows: int, fraction: float) -> int:
    return math.floor(rows * fraction + 0.5)


def _cut(
    indices: np.ndarray, validation_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test): the first rows train, the last rows test."""
    rows = len(indices)
    test_start = rows - _rounded(rows, test_fraction)
    validation_start = test_start - _rounded(rows, validation_fraction)
    return indices[:validation_start], indices[validation_start:test_start], indices[test_start:]


def _check_parts(
    parts: tuple[np.ndarray, ...],
    labels: np.ndarray | None,
    rows: int,
    fractions: tuple[float, float],
) -> None:
    """Every split has rows and, for a binary label, rows of both classes."""
    class_counts: dict = {}
    if labels is not None:
        classes, counts = np.unique(labels, return_counts=True)
        class_counts = dict(zip(classes.tolist(), counts.tolist(), strict=True))
        if len(class_counts) < 2:
            raise SplitError(
                f"binary target has a single class {list(class_counts)}; "
                "no split can hold both classes"
            )
    asked = dict(zip(SPLIT_NAMES[1:], fractions, strict=True))
    for name, indices in zip(SPLIT_NAMES, parts, strict=True):
        rule = f"{name}_fraction={asked[name]}" if name in asked else "the rows left over"
        if len(indices) == 0:
            raise SplitError(f"{name} split would be empty: {rows} rows and {rule}")
        present = set(np.unique(labels[indices]).tolist()) if labels is not None else set()
        for label, count in class_counts.items():
            if label not in present:
                raise SplitError(
                    f"{name} split would have no rows of class {label!r} (the table has "
                    f"{count} such rows, {rule}); a binary model cannot be fitted or judged "
                    "without both classes"
                )
