"""Is this table fit to train on? Checks the label, picks the usable features, says why.

Validation runs once, before anything is trained, so that a wrong target column, a three-class
"binary" label or a table of ten rows fails in seconds with one message that names the column,
the value and the rule. Columns that cannot help a model (all missing, constant, of a type
XGBoost cannot take) are removed, and every removal is listed in the report: nothing is
dropped, or used, silently.

What XGBoost itself refuses is refused here, minutes before training would, naming every such
column in one message: feature names holding `[`, `]` or `<` (XGBoost's own rule, in
`DMatrix.feature_names`), and values that are infinite or beyond float32, which XGBoost
converts every feature and label to (1e39 becomes inf). Such columns are refused, not renamed
or cleaned: a feature's name is what the served model asks clients for, and an infinite value
is not a missing one, so only the person who knows the data can say what either should be.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.data.validation_report import ColumnSummary, validation_markdown

TASKS = ("binary", "regression")
# Known label pairs, (negative, positive), compared case-insensitively.
KNOWN_LABEL_PAIRS = (
    ("no", "yes"),
    ("false", "true"),
    ("n", "y"),
    ("0", "1"),
    ("negative", "positive"),
)
MAX_LISTED_VALUES = 10
XGBOOST_NAME_FORBIDS = ("[", "]", "<")
"""Characters XGBoost refuses in a feature name (xgboost.core.DMatrix.feature_names)."""
FLOAT32_MAX = 3.4028234663852886e38
"""The largest float32; XGBoost reads a larger magnitude as inf, and refuses it."""
IDENTIFIER_WARNING = (
    "a different value in each of the {rows} rows, as an identifier has: a model learns "
    "nothing from it that holds for new rows; if it identifies rows, list it in drop_columns"
)
"""Said of a text or integer feature unique per row (customer ids, row numbers). Kept, not
dropped: a unique text can be a real feature, and only its owner knows which it is."""


class DataValidationError(ValueError):
    """A table that cannot be trained on as asked."""


@dataclass(frozen=True)
class ValidationResult:
    """What training gets: the cleaned table and the decisions behind it."""

    table: pa.Table
    """Feature columns (in source order) and the label: int 0/1 (binary) or float (regression)."""
    features: list[str]
    categorical_features: list[str]
    label_mapping: dict | None
    """Source label -> 0/1 when string labels were mapped; None when the labels already were."""
    dropped: dict[str, str]
    """Column -> why it is not a feature (drop_columns, all missing, constant, type)."""
    warnings: dict[str, str]
    """Feature -> what looks wrong with it though it is kept (an identifier-like column)."""
    report_markdown: str


def validate_training_table(
    table: pa.Table,
    target: str,
    task: str = "binary",
    min_rows: int = 100,
    drop_columns: Sequence[str] = (),
    time_column: str | None = None,
) -> ValidationResult:
    """Check `table` for training on `target` and keep only the usable feature columns.

    Args:
        table: The loaded dataset.
        target: The label column.
        task: "binary" (0/1 ints, bools, or exactly two string labels) or "regression"
            (numeric target).
        min_rows: Fewest rows accepted.
        drop_columns: Columns never used as features (ids, timestamps); each must exist.
        time_column: A column the split orders by: kept in the table, never a feature.

    Raises:
        DataValidationError: with the column, the offending value and the rule; every
            feature whose name or values XGBoost refuses, in one message.
    """
    passthrough = [time_column] if time_column else []
    _check_columns(table, target, task, [*drop_columns, *passthrough])
    if table.num_rows < min_rows:
        raise DataValidationError(
            f"table has {table.num_rows} rows; at least min_rows={min_rows} are required"
        )
    if task == "binary":
        label, label_mapping = _binary_label(table.column(target), target)
    else:
        label, label_mapping = _regression_label(table.column(target), target), None

    dropped = {name: "listed in drop_columns" for name in drop_columns}
    dropped.update({name: "time column: orders the split, not a feature" for name in passthrough})
    kept: dict[str, pa.ChunkedArray] = {}
    summaries: dict[str, ColumnSummary] = {}
    for name in table.column_names:
        if name == target or name in dropped:
            continue
        column, summary, reason = _examine_feature(table.column(name), table.num_rows)
        if reason:
            dropped[name] = reason
        else:
            kept[name], summaries[name] = column, summary
    if not kept:
        reasons = "; ".join(f"{name!r}: {why}" for name, why in dropped.items()) or "none"
        raise DataValidationError(
            f"no usable feature columns besides target {target!r}; dropped: {reasons}"
        )
    _check_trainable(kept, target, label)

    cleaned = pa.table(
        {
            name: label if name == target else kept.get(name, table.column(name))
            for name in table.column_names
            if name == target or name in kept or name in passthrough
        }
    )
    features = list(kept)
    warnings = {
        name: IDENTIFIER_WARNING.format(rows=table.num_rows)
        for name, summary in summaries.items()
        if summary.whole_values and summary.distinct == table.num_rows
    }
    return ValidationResult(
        table=cleaned,
        features=features,
        categorical_features=[f for f in features if summaries[f].kind == "categorical"],
        label_mapping=label_mapping,
        dropped=dropped,
        warnings=warnings,
        report_markdown=validation_markdown(
            cleaned, target, task, label_mapping, summaries, dropped, warnings
        ),
    )


def _check_columns(table: pa.Table, target: str, task: str, drop_columns: Sequence[str]) -> None:
    names = table.column_names
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataValidationError(f"column names must be unique; repeated: {duplicated}")
    if task not in TASKS:
        raise DataValidationError(f"task {task!r} is not supported; use one of {list(TASKS)}")
    if target not in names:
        raise DataValidationError(f"target column {target!r} not in table; columns are {names}")
    unknown = [name for name in drop_columns if name not in names]
    if unknown:
        raise DataValidationError(
            f"drop_columns/time_column name column(s) {unknown} not in table; columns are {names}"
        )
    if target in drop_columns:
        raise DataValidationError(f"drop_columns names the target column {target!r}")


def _check_trainable(
    features: dict[str, pa.ChunkedArray], target: str, label: pa.ChunkedArray
) -> None:
    """Refuse, in one message, the feature names and values XGBoost would refuse."""
    problems = []
    bad_names = [name for name in features if any(c in name for c in XGBOOST_NAME_FORBIDS)]
    if bad_names:
        problems.append(
            f"feature name(s) {bad_names} contain [, ] or <, which XGBoost refuses in feature "
            "names: rename them in the source, or list them in drop_columns"
        )
    too_large = {
        name: count
        for name, column in [*features.items(), (target, label)]
        if (count := _float32_overflow_count(column))
    }
    if too_large:
        counts = ", ".join(
            f"{name!r} ({count} of {len(label)} rows)" for name, count in too_large.items()
        )
        problems.append(
            f"infinite values or values beyond float32 (XGBoost's number type, max "
            f"{FLOAT32_MAX:.6g}) in {counts}: make them missing (null) or finite in the source, "
            "or list the features in drop_columns"
        )
    if problems:
        raise DataValidationError("XGBoost cannot train on this table: " + "; ".join(problems))


def _float32_overflow_count(column: pa.ChunkedArray) -> int:
    """Values that are ±inf once XGBoost converts them to float32 (NaN and nulls are missing)."""
    if not (pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)):
        return 0  # integers and booleans always fit; text is categorical
    as_float32 = pc.cast(column, pa.float32(), safe=False)
    return pc.sum(pc.is_inf(as_float32)).as_py() or 0


def _missing_count(column: pa.ChunkedArray) -> int:
    missing = column.null_count
    if pa.types.is_floating(column.type):
        missing += pc.sum(pc.is_nan(column)).as_py() or 0
    return missing


def _present_values(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Non-missing values (nulls and NaN removed)."""
    if pa.types.is_floating(column.type):
        return column.filter(pc.invert(pc.is_nan(column)))
    return column.drop_null()


def _listed(values: list) -> str:
    shown = values[:MAX_LISTED_VALUES]
    more = f" (and {len(values) - len(shown)} more)" if len(values) > len(shown) else ""
    return f"{shown}{more}"


def _binary_label(column: pa.ChunkedArray, target: str) -> tuple[pa.ChunkedArray, dict | None]:
    missing = _missing_count(column)
    if missing:
        raise DataValidationError(
            f"target {target!r} has {missing} missing label(s) in {len(column)} rows; "
            "every training row needs a label"
        )
    kind = column.type
    if pa.types.is_boolean(kind):
        classes = sorted(pc.unique(column).to_pylist())
        _require_two_classes(target, classes)
        return pc.cast(column, pa.int64()), None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        classes = sorted(pc.unique(column).to_pylist())
        if not set(classes) <= {0, 1}:
            raise DataValidationError(
                f"binary target {target!r} must hold 0/1, booleans or two string labels; "
                f"found values {_listed(classes)}"
            )
        _require_two_classes(target, classes)
        return pc.cast(column, pa.int64()), None
    if _is_text(kind):
        labels = pc.cast(column, pa.string())
        classes = sorted(pc.unique(labels).to_pylist())
        _require_two_classes(target, classes)
        mapping = _label_mapping(classes[0], classes[1])
        positive = next(label for label, code in mapping.items() if code == 1)
        return pc.cast(pc.equal(labels, positive), pa.int64()), mapping
    raise DataValidationError(
        f"binary target {target!r} has type {kind}; use 0/1 ints, booleans or two string labels"
    )


def _require_two_classes(target: str, classes: list) -> None:
    if len(classes) != 2:
        raise DataValidationError(
            f"binary target {target!r} must have exactly 2 classes; found {len(classes)}: "
            f"{_listed(classes)}"
        )


def _label_mapping(first: str, second: str) -> dict[str, int]:
    """Known pairs (no/yes, false/true, ...) put the positive label at 1; else sorted order."""
    for negative, positive in KNOWN_LABEL_PAIRS:
        if (first.lower(), second.lower()) == (positive, negative):
            return {second: 0, first: 1}
    return {first: 0, second: 1}


def _regression_label(column: pa.ChunkedArray, target: str) -> pa.ChunkedArray:
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)):
        raise DataValidationError(
            f"regression target {target!r} must be numeric; it has type {kind}"
        )
    missing = _missing_count(column)
    if missing:
        raise DataValidationError(
            f"target {target!r} has {missing} missing value(s) in {len(column)} rows; "
            "every training row needs a label"
        )
    return pc.cast(column, pa.float64())


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    )


def _examine_feature(
    column: pa.ChunkedArray, rows: int
) -> tuple[pa.ChunkedArray, ColumnSummary | None, str | None]:
    """(column as stored for training, its summary, why it is dropped or None)."""
    missing = _missing_count(column)
    if missing == rows:
        return column, None, "all values missing"
    kind = column.type
    if _is_text(kind):
        column, feature_kind = pc.cast(column, pa.string()), "categorical"
    elif (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
    ):
        feature_kind = "numeric"
    else:
        return column, None, f"unsupported type {kind} (only numbers, booleans and strings)"
    present = _present_values(column)
    distinct = pc.count_distinct(present).as_py()
    if distinct == 1:
        return column, None, f"constant: every non-missing value is {present[0].as_py()!r}"
    whole_values = feature_kind == "categorical" or pa.types.is_integer(kind)
    return column, ColumnSummary(feature_kind, missing, distinct, whole_values), None
