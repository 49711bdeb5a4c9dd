"""The experiment's observations: the prediction log joined with the outcome labels, per variant.

The log (`ctloop.components.contract.prediction_log`) says which variant answered each row of
each request and with what score; the labels table, written later by whoever learns the
outcome, says what happened: `request_id`, an optional `row` (the row's position in its
request; 0 when absent, for one-row requests) and the policy's outcome column. They are joined
on (request_id, row). Nothing is guessed: a logged row without a label (the outcome is not
known yet, or never will be) is counted per variant and left out; a label without a logged
prediction (the log lost it, or the label belongs elsewhere) is counted and left out; a label
whose outcome is empty counts as no label; a row logged more than once (a client that retried
with the same request id, perhaps answered by another variant) cannot be attributed, so all of
its copies are counted and left out. A label given twice for the same row is bad input: which
one holds cannot be known.

Each labelled row becomes one value of the policy's metric: its log loss (from the score and a
0/1 label, scores clipped to [1e-15, 1 - 1e-15] as scikit-learn does) or its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.checks import format_number
from ctloop.components.contract import prediction_log as log_contract
from ctloop.components.experiment.policy import LOG_LOSS, ExperimentPolicy
from ctloop.components.table_io import read_table

KEY = [log_contract.REQUEST_ID, log_contract.ROW]
LOG_REQUIRED = (
    log_contract.REQUEST_ID,
    log_contract.ROW,
    log_contract.VARIANT,
    log_contract.SCORE,
)
SCORE_CLIP = 1e-15
_OUTCOME = "__outcome"  # the labels' outcome column, renamed: it may share a name with the log's


class ExperimentInputError(ValueError):
    """A prediction log or labels table that the analysis cannot use, and why."""


@dataclass(frozen=True)
class VariantRows:
    """One variant's rows: how many were logged and labelled, and the metric's values."""

    variant: str
    model_versions: tuple[str, ...]
    logged: int
    """Rows logged for this variant (those logged more than once excluded)."""
    unlabelled: int
    values: np.ndarray
    """The metric's value of each labelled row."""

    @property
    def labelled(self) -> int:
        return int(self.values.size)


@dataclass(frozen=True)
class Observations:
    """What the join found: each variant's rows, and what could not be used."""

    variants: dict[str, VariantRows]
    labels_without_prediction: int
    empty_labels: int
    """Label rows whose outcome is empty: they count as no label."""
    logged_more_than_once: int
    """Log rows whose (request_id, row) appears more than once: left out, every copy."""


def read_observations(
    prediction_log_uri: str, labels_uri: str, policy: ExperimentPolicy
) -> Observations:
    """Read the log and the labels (any table `read_table` reads) and join them."""
    return join_observations(
        read_table(prediction_log_uri),
        read_table(labels_uri),
        policy,
        log_name=prediction_log_uri,
        labels_name=labels_uri,
    )


def join_observations(
    log: pa.Table,
    labels: pa.Table,
    policy: ExperimentPolicy,
    *,
    log_name: str = "prediction log",
    labels_name: str = "labels",
) -> Observations:
    """Join the log with the labels on (request_id, row), per variant (module docstring).

    Raises:
        ExperimentInputError: a required column is missing or of the wrong kind, a row has no
            variant, a label is given twice, or (for log loss) a label is not 0/1 or a score
            is not a probability; the message names the table and the column or row.
    """
    predictions = _log_table(log, log_name)
    outcomes, empty = _labels_table(labels, labels_name, policy.outcome_column)
    predictions, repeated = _by_key(predictions)
    if repeated.any():
        predictions = predictions.filter(pa.array(~repeated))
    matched = predictions.join(outcomes, keys=KEY, join_type="inner").sort_by(
        [(column, "ascending") for column in KEY]
    )
    if policy.metric == LOG_LOSS:
        values = _log_loss(matched, log_name, labels_name, policy.outcome_column)
    else:
        values = matched.column(_OUTCOME).to_numpy()
    matched_variants = matched.column(log_contract.VARIANT).to_numpy(zero_copy_only=False)
    variants = {}
    for variant in sorted(pc.unique(predictions.column(log_contract.VARIANT)).to_pylist()):
        rows = predictions.filter(pc.equal(predictions.column(log_contract.VARIANT), variant))
        versions = pc.unique(rows.column(log_contract.MODEL_VERSION).drop_null()).to_pylist()
        mask = matched_variants == variant
        variants[variant] = VariantRows(
            variant=variant,
            model_versions=tuple(sorted(versions)),
            logged=rows.num_rows,
            unlabelled=rows.num_rows - int(mask.sum()),
            values=values[mask],
        )
    return Observations(
        variants=variants,
        labels_without_prediction=outcomes.num_rows - matched.num_rows,
        empty_labels=empty,
        logged_more_than_once=int(repeated.sum()),
    )


def _by_key(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """`table` sorted by (request_id, row), and which of its rows share their key with
    another (a sort and a comparison of neighbours: a hash aggregation costs far more)."""
    table = table.sort_by([(column, "ascending") for column in KEY])
    same = np.ones(max(table.num_rows - 1, 0), dtype=bool)
    for column in KEY:
        values = table.column(column)
        same &= pc.equal(values.slice(1), values.slice(0, table.num_rows - 1)).to_numpy(
            zero_copy_only=False
        )
    repeated = np.zeros(table.num_rows, dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    return table, repeated


def _log_table(log: pa.Table, name: str) -> pa.Table:
    _require(log, LOG_REQUIRED, name)
    columns = {
        log_contract.REQUEST_ID: _strings(log, log_contract.REQUEST_ID, name),
        log_contract.ROW: _integers(log, log_contract.ROW, name),
        log_contract.VARIANT: _strings(log, log_contract.VARIANT, name),
        log_contract.MODEL_VERSION: (
            _strings(log, log_contract.MODEL_VERSION, name)
            if log_contract.MODEL_VERSION in log.column_names
            else pa.nulls(log.num_rows, pa.string())
        ),
        log_contract.SCORE: _floats(log, log_contract.SCORE, name),
    }
    for column in (log_contract.REQUEST_ID, log_contract.ROW, log_contract.VARIANT):
        missing = columns[column].null_count
        if missing:
            raise ExperimentInputError(f"{name}: {missing} row(s) have no {column!r}")
    return pa.table(columns)


def _labels_table(labels: pa.Table, name: str, outcome: str) -> tuple[pa.Table, int]:
    """The labels with a known outcome, and how many had none."""
    _require(labels, (log_contract.REQUEST_ID, outcome), name)
    rows = (
        _integers(labels, log_contract.ROW, name)
        if log_contract.ROW in labels.column_names
        else pa.array(np.zeros(labels.num_rows, dtype=np.int64))
    )
    table = pa.table(
        {
            log_contract.REQUEST_ID: _strings(labels, log_contract.REQUEST_ID, name),
            log_contract.ROW: rows,
            _OUTCOME: _floats(labels, outcome, name),
        }
    )
    known = table.filter(pc.is_valid(table.column(_OUTCOME)))
    if not np.isfinite(known.column(_OUTCOME).to_numpy()).all():
        raise ExperimentInputError(f"{name}: column {outcome!r} holds values that are not finite")
    for column in KEY:
        if known.column(column).null_count:
            raise ExperimentInputError(f"{name}: a label row has no {column!r}")
    known, repeated = _by_key(known)
    if repeated.any():
        first = known.slice(int(np.argmax(repeated)), 1).to_pylist()[0]
        raise ExperimentInputError(
            f"{name}: {int(repeated.sum())} label rows repeat a (request_id, row), e.g. "
            f"({first[log_contract.REQUEST_ID]!r}, {first[log_contract.ROW]}): "
            "which outcome holds cannot be known"
        )
    return known, table.num_rows - known.num_rows


def _log_loss(matched: pa.Table, log_name: str, labels_name: str, outcome: str) -> np.ndarray:
    labels = matched.column(_OUTCOME).to_numpy()
    scores = matched.column(log_contract.SCORE).to_numpy()
    _require_values(matched, labels, (labels == 0) | (labels == 1), labels_name, outcome, "0 or 1")
    probability = np.isfinite(scores) & (scores >= 0) & (scores <= 1)
    _require_values(matched, scores, probability, log_name, log_contract.SCORE, "in [0, 1]")
    clipped = np.clip(scores, SCORE_CLIP, 1 - SCORE_CLIP)
    return -(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))


def _require_values(
    table: pa.Table, values: np.ndarray, good: np.ndarray, name: str, column: str, rule: str
) -> None:
    if good.all():
        return
    at = int(np.flatnonzero(~good)[0])
    example = format_number(values[at])
    raise ExperimentInputError(
        f"{name}: column {column!r} must be {rule} for log loss; "
        f"{int((~good).sum())} labelled row(s) are not, e.g. {example} at request "
        f"{table.column(log_contract.REQUEST_ID)[at].as_py()!r} "
        f"row {table.column(log_contract.ROW)[at].as_py()}"
    )


def _require(table: pa.Table, columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in table.column_names]
    if missing:
        raise ExperimentInputError(
            f"{name} has no column(s) {missing}; its columns are {table.column_names}"
        )


def _strings(table: pa.Table, column: str, name: str) -> pa.ChunkedArray:
    return _cast(table, column, name, pa.string(), "text")


def _integers(table: pa.Table, column: str, name: str) -> pa.ChunkedArray:
    return _cast(table, column, name, pa.int64(), "whole numbers")


def _floats(table: pa.Table, column: str, name: str) -> pa.ChunkedArray:
    return _cast(table, column, name, pa.float64(), "numbers")


def _cast(
    table: pa.Table, column: str, name: str, target: pa.DataType, kind: str
) -> pa.ChunkedArray:
    values = table.column(column)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    numeric_target = not pa.types.is_string(target)
    if numeric_target and not (
        pa.types.is_integer(values.type)
        or pa.types.is_floating(values.type)
        or pa.types.is_boolean(values.type)
        or pa.types.is_null(values.type)
    ):
        raise ExperimentInputError(
            f"{name}: column {column!r} must hold {kind}, it holds {values.type}"
        )
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ExperimentInputError(
            f"{name}: column {column!r} ({values.type}) cannot be read as {kind}: {error}"
        ) from error
