"""Score a whole table with a model, streaming it record batch by record batch.

A table of any length is scored in bounded memory: one record batch is turned into model
input and scored at a time (with the few that Arrow's scanner reads ahead), and the
predictions are appended to a Parquet file as they come. Rows become model input through
the model contract's `to_frame`, as for training, evaluation and serving, so categorical codes
follow the model's reference profile exactly as at training time. The model is any URI the
contract's `load_model_uri` takes (a model folder, `models:/name@champion`, `runs:/…`), loaded
by the same loader the KServe predictor uses.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ctloop.components.contract.model_folder import LoadedModel
from ctloop.components.contract.model_input import predict_scores, to_frame
from ctloop.components.table_io import DEFAULT_BATCH_ROWS, iter_batches, partial_then_rename

SCORE_COLUMN = "score"
VERSION_COLUMN = "model_version"
DEFAULT_LOG_EVERY_ROWS = 100_000

logger = logging.getLogger(__name__)


class ScoringError(ValueError):
    """A key column or batch setting that scoring cannot work with."""


@dataclass(frozen=True)
class ScoringSummary:
    """What a scoring pass did: rows, batches, the model version and the score range."""

    rows: int
    batches: int
    model_version: str
    score_min: float | None
    score_max: float | None
    score_mean: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "batches": self.batches,
            "model_version": self.model_version,
            "score_min": self.score_min,
            "score_max": self.score_max,
            "score_mean": self.score_mean,
        }


def iter_scores(
    batches: Iterable[pa.RecordBatch], model: LoadedModel
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Each record batch with the model's scores of its rows (`predict_scores` on `to_frame`)."""
    for batch in batches:
        if batch.num_rows == 0:  # empty files and row groups: nothing for XGBoost to score
            yield batch, np.zeros(0)
            continue
        yield batch, predict_scores(model.booster, to_frame(batch, model.schema))


def run_scoring(
    dataset_uri: str,
    model: LoadedModel,
    output_path: str | Path,
    *,
    key_columns: Sequence[str] = (),
    batch_rows: int = DEFAULT_BATCH_ROWS,
    log_every_rows: int = DEFAULT_LOG_EVERY_ROWS,
) -> ScoringSummary:
    """Score every row of a Parquet or CSV table and write the predictions as Parquet.

    Memory is bounded by a few batches of `batch_rows` rows however long the table is. The
    output holds, row for row in input order, the `key_columns`, `score` (probability for a
    binary model, value for regression) and `model_version`; it appears only when complete
    (written beside `output_path`, then renamed).

    Args:
        dataset_uri: Parquet file or folder, or CSV file (.csv / .csv.gz); local or a pyarrow
            filesystem URI.
        model: The model (`load_model_uri`).
        output_path: Local path of the predictions Parquet file.
        key_columns: Input columns copied into the output to join predictions back (ids).
        batch_rows: Most rows per record batch.
        log_every_rows: A progress line is logged each time this many more rows are scored.

    Returns:
        Rows and batches scored, the model version and the score range.

    Raises:
        ScoringError: a key column is also the score or version column, or a batch setting
            below 1.
        DatasetError: the table cannot be opened or lacks a feature or key column.
        TrainingDataError: a feature column cannot become model input.
    """
    keys = list(dict.fromkeys(key_columns))
    clashing = [name for name in keys if name in (SCORE_COLUMN, VERSION_COLUMN)]
    if clashing:
        raise ScoringError(f"key column(s) {clashing} would clash with the output's own columns")
    if batch_rows < 1 or log_every_rows < 1:
        raise ScoringError(
            f"batch_rows = {batch_rows} and log_every_rows = {log_every_rows} must be >= 1"
        )
    columns = list(dict.fromkeys([*model.schema.features, *keys]))
    batches = iter_batches(dataset_uri, columns=columns, batch_rows=batch_rows)
    rows = count = 0
    low, high, total = np.inf, -np.inf, 0.0
    logged = 0
    with partial_then_rename(output_path) as partial, contextlib.ExitStack() as stack:
        writer = None
        for batch, scores in iter_scores(batches, model):
            table = _predictions(batch, scores, keys, model.version)
            if writer is None:
                writer = stack.enter_context(pq.ParquetWriter(partial, table.schema))
            writer.write_table(table)
            rows, count = rows + len(scores), count + 1
            if len(scores):
                low, high = min(low, scores.min()), max(high, scores.max())
                total += float(scores.sum())
            if rows - logged >= log_every_rows:
                logged = rows
                logger.info(
                    "scored %d rows in %d batches with version %s", rows, count, model.version
                )
        if writer is None:
            pq.write_table(_predictions(_empty(keys), np.zeros(0), keys, model.version), partial)
    logger.info("scored %d rows in %d batches with version %s: done", rows, count, model.version)
    return ScoringSummary(
        rows=rows,
        batches=count,
        model_version=model.version,
        score_min=float(low) if rows else None,
        score_max=float(high) if rows else None,
        score_mean=total / rows if rows else None,
    )


def _predictions(
    batch: pa.RecordBatch, scores: np.ndarray, keys: list[str], version: str
) -> pa.Table:
    columns = {name: batch.column(name) for name in keys}
    columns[SCORE_COLUMN] = pa.array(scores, type=pa.float64())
    columns[VERSION_COLUMN] = pa.repeat(pa.scalar(version, pa.string()), len(scores))
    return pa.table(columns)


def _empty(keys: list[str]) -> pa.RecordBatch:
    return pa.record_batch({name: pa.array([], pa.null()) for name in keys})
