"""Memory-lean XGBoost training straight from the split Parquet files.

The split step writes Parquet; reading a whole file into pandas and handing it to
`xgboost.DMatrix` keeps three copies of the data alive at once (Arrow, pandas with Python
string objects, and XGBoost's own CSR matrix). Here the files are streamed record batch by
record batch through an `xgboost.DataIter` into `xgboost.QuantileDMatrix`, which keeps only
the quantised histogram index, the in-memory floor. For large files (`external_memory`)
`xgboost.ExtMemQuantileDMatrix` writes the same quantised pages to a temporary folder on disk
and training reads them back page by page, so resident memory is one batch, a few pages and the
per-row gradients, and the model is the same. `tests/benchmarks/bench_training.py` measures
both against the naive pandas path (figures: docs/performance.md).

Rows become model input through the model contract's `to_frame`, as they do for evaluation,
batch scoring and serving.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xgboost as xgb

from ctloop.components.contract.model_input import FeatureSchema, ModelInputError, to_frame
from ctloop.components.train.checkpoints import CHECKPOINT_EVERY, CheckpointStore, boost

TRAINING_LOOP_KEYS = ("num_boost_round", "early_stopping_rounds")
"""Hyperparameters that drive `xgboost.train`'s loop rather than the booster itself."""

EXTERNAL_MEMORY_MIN_ROWS = 1_000_000
"""Training rows from which `external_memory="auto"` caches the quantised pages on disk.

Below it the in-memory index is small enough to skip the disk (docs/performance.md).
"""


class TrainingDataError(ModelInputError):
    """A Parquet split or label column that cannot be trained on."""


@dataclass
class TrainResult:
    """A trained booster and what its training saw."""

    booster: xgb.Booster
    best_iteration: int
    evals_result: dict[str, list[float]]
    train_rows: int
    validation_rows: int
    early_stopped: bool = False
    """True when early stopping ended training before `num_boost_round`."""
    resumed_rounds: int = 0
    """Rounds taken from a checkpoint of an earlier, interrupted run (0: none)."""


def iter_frames(
    path: str | Path,
    schema: FeatureSchema,
    columns: Sequence[str] = (),
    batch_rows: int = 65536,
) -> Iterator[tuple[pd.DataFrame, pa.RecordBatch]]:
    """Stream a Parquet file as (model input frame, record batch of the extra `columns`)."""
    parquet = _open_parquet(path)
    available = set(parquet.schema_arrow.names)
    wanted = list(dict.fromkeys([*schema.features, *columns]))
    absent = [c for c in wanted if c not in available]
    if absent:
        raise TrainingDataError(
            f"{path}: missing column(s) {absent}; the file has {sorted(available)}"
        )
    extra = list(columns)
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
        yield to_frame(batch, schema), batch.select(extra)


def _open_parquet(path: str | Path) -> pq.ParquetFile:
    # pre_buffer (the default) reads whole row groups ahead: ~240 MB more peak at 2M rows.
    # Without a buffer_size each column chunk is read whole before decoding: ~35 MB more.
    try:
        return pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 16)
    except (OSError, pa.ArrowInvalid) as error:
        raise TrainingDataError(f"{path}: cannot be read as Parquet: {error}") from error


def _labels(path: str | Path, target: str, batch: pa.RecordBatch) -> np.ndarray:
    column = batch.column(target)
    try:
        labels = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise TrainingDataError(
            f"{path}: label column {target!r} of type {column.type} is not numeric"
        ) from error
    if np.isnan(labels).any():
        raise TrainingDataError(f"{path}: label column {target!r} has missing values")
    return labels


class _ParquetBatches(xgb.DataIter):
    """Feeds one Parquet file to XGBoost a record batch at a time (XGBoost reads it twice)."""

    def __init__(
        self,
        path: str | Path,
        target: str,
        schema: FeatureSchema,
        batch_rows: int,
        cache_prefix: str | None = None,
    ):
        self._path = path
        self._target = target
        self._schema = schema
        self._batch_rows = batch_rows
        self._frames: Iterator[tuple[pd.DataFrame, pa.RecordBatch]] | None = None
        # A cache prefix makes ExtMemQuantileDMatrix write one quantised page per batch there.
        super().__init__(cache_prefix=cache_prefix)

    def next(self, input_data: Any) -> bool:
        # Arrow's allocator keeps freed batch buffers for reuse; handing them back before the
        # next batch keeps them from stacking on top of XGBoost's own peak (~60 MB at 2M rows).
        pa.default_memory_pool().release_unused()
        if self._frames is None:
            self._frames = iter_frames(self._path, self._schema, [self._target], self._batch_rows)
        batch = next(self._frames, None)
        if batch is None:
            return False
        frame, extra = batch
        input_data(data=frame, label=_labels(self._path, self._target, extra))
        return True

    def reset(self) -> None:
        self._frames = None


def train_booster(
    train_path: str | Path,
    validation_path: str | Path,
    *,
    target: str,
    schema: FeatureSchema,
    params: Mapping[str, Any],
    device: str = "cpu",
    batch_rows: int = 65536,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
    external_memory: bool | Literal["auto"] = "auto",
    checkpoints: CheckpointStore | None = None,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> TrainResult:
    """Train with early stopping on the validation file, streaming both Parquet files.

    Args:
        train_path: Parquet file with the features and `target`.
        validation_path: Parquet file watched for early stopping (named "validation").
        target: Label column.
        schema: Input columns from `feature_schema`.
        params: Checked hyperparameters (`parse_hyperparameters`), including
            `num_boost_round` and `early_stopping_rounds`.
        device: XGBoost device, "cpu" or "cuda" (`resolve_device`).
        batch_rows: Rows per streamed record batch.
        callbacks: Extra `xgboost.callback.TrainingCallback`s, e.g. a metrics logger.
        external_memory: Cache the quantised training and validation pages on disk (in a
            temporary folder under `tempfile.gettempdir()`, i.e. `$TMPDIR`, removed afterwards)
            instead of in memory, for a fraction of the peak memory. "auto" does so on
            CPU from `EXTERNAL_MEMORY_MIN_ROWS` training rows. CPU only: XGBoost's GPU external
            memory needs batches already on the GPU, so "auto" keeps the in-memory path on
            "cuda" (which builds the index on the host and moves it to the GPU).
        checkpoints: Where to save the booster every `checkpoint_every` rounds and resume
            from (`checkpoints.py`: why a resumed run gives the same trees); None keeps none.
        checkpoint_every: Rounds per checkpoint (with `checkpoints`). Keep the default: with
            row or column sampling the trees depend on it.

    Returns:
        The booster (set to predict on CPU), its best iteration and the validation curves.
    """
    if batch_rows < 1:
        raise TrainingDataError(f"batch_rows = {batch_rows} must be >= 1")
    booster_params = {k: v for k, v in params.items() if k not in TRAINING_LOOP_KEYS}
    booster_params["device"] = device
    num_boost_round = int(params.get("num_boost_round", 500))

    train_rows = _open_parquet(train_path).metadata.num_rows
    validation_rows = _open_parquet(validation_path).metadata.num_rows
    for path, rows in ((train_path, train_rows), (validation_path, validation_rows)):
        if rows == 0:
            raise TrainingDataError(f"{path}: has no rows to train or validate on")

    on_disk = _use_external_memory(external_memory, device, train_rows)
    with contextlib.ExitStack() as stack:
        cache_dir = None
        if on_disk:
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ctloop-")))
        # The matrices live only inside `_train`: their cache files are closed before the
        # folder is removed.
        booster, evals_result, resumed_rounds = _train(
            train_path,
            validation_path,
            target=target,
            schema=schema,
            booster_params=booster_params,
            num_boost_round=num_boost_round,
            early_stopping_rounds=params.get("early_stopping_rounds"),
            batch_rows=batch_rows,
            callbacks=callbacks,
            cache_dir=cache_dir,
            checkpoints=checkpoints,
            checkpoint_every=checkpoint_every,
        )
    # Scoring frames live in host memory; a CUDA booster would warn and copy on every call.
    booster.set_param({"device": "cpu"})
    best = booster.attr("best_iteration")
    best_iteration = int(best) if best is not None else booster.num_boosted_rounds() - 1
    return TrainResult(
        booster=booster,
        best_iteration=best_iteration,
        evals_result=evals_result,
        train_rows=train_rows,
        validation_rows=validation_rows,
        early_stopped=booster.num_boosted_rounds() < num_boost_round,
        resumed_rounds=resumed_rounds,
    )


def _use_external_memory(
    external_memory: bool | Literal["auto"], device: str, train_rows: int
) -> bool:
    if external_memory == "auto":
        return device == "cpu" and train_rows >= EXTERNAL_MEMORY_MIN_ROWS
    if external_memory is not True and external_memory is not False:
        raise TrainingDataError(
            f"external_memory = {external_memory!r} must be True, False or 'auto'"
        )
    if external_memory and device != "cpu":
        raise TrainingDataError(
            f"external_memory=True needs device 'cpu', not {device!r}: XGBoost's GPU external "
            "memory reads batches that are already on the GPU; use 'auto' or False there"
        )
    return external_memory


def _train(
    train_path: str | Path,
    validation_path: str | Path,
    *,
    target: str,
    schema: FeatureSchema,
    booster_params: dict[str, Any],
    num_boost_round: int,
    early_stopping_rounds: int | None,
    batch_rows: int,
    callbacks: Sequence[xgb.callback.TrainingCallback],
    cache_dir: Path | None,
    checkpoints: CheckpointStore | None,
    checkpoint_every: int,
) -> tuple[xgb.Booster, dict[str, list[float]], int]:
    """Build the training and validation matrices (in memory, or paged under `cache_dir`)
    and boost; return the booster, its curves and the rounds resumed from a checkpoint."""
    max_bin = int(booster_params.get("max_bin", 256))

    def matrix(path: str | Path, name: str, ref: xgb.DMatrix | None) -> xgb.DMatrix:
        if cache_dir is None:
            batches = _ParquetBatches(path, target, schema, batch_rows)
            return xgb.QuantileDMatrix(batches, max_bin=max_bin, enable_categorical=True, ref=ref)
        batches = _ParquetBatches(path, target, schema, batch_rows, str(cache_dir / name))
        return xgb.ExtMemQuantileDMatrix(batches, max_bin=max_bin, enable_categorical=True, ref=ref)

    dtrain = matrix(train_path, "train", None)
    # The validation matrix reuses the training cut points (`ref`): no second sketch.
    dvalidation = matrix(validation_path, "validation", dtrain)
    return boost(
        booster_params,
        dtrain,
        dvalidation,
        num_boost_round=num_boost_round,
        early_stopping_rounds=early_stopping_rounds,
        callbacks=callbacks,
        store=checkpoints,
        every=checkpoint_every,
    )
