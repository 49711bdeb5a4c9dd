"""The prediction log's contract: one row per scored row, what the server writes and an A/B
analysis reads.

The server writes it (`ctloop.serving.prediction_log`) and the experiment family reads it
(`ctloop.components.experiment`); both take the schema, the column names and the row hash from
here, because serving may import nothing of `components/` but the contract.

A log is a folder of Parquet files, Hive-partitioned by day
(`<uri>/date=YYYY-MM-DD/part-….parquet`), with the columns of `PREDICTION_LOG_SCHEMA`:

- `request_id`: the id the answer carried (the caller's `X-Request-Id`, v2's `id`, or a new one),
  which is what a caller later reports an outcome against;
- `row`: the row's position in its request (0 for a single-row request);
- `variant`: the variant that answered (on a cluster, the registered version it serves);
- `model_version`: the registered version behind it, null when the server knows none;
- `inputs_hash`: `row_hashes` of the row's model input, so two logs can be matched row by row
  without storing the features;
- `score`: what the model answered;
- `time`: when the request was answered (UTC).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

REQUEST_ID = "request_id"
ROW = "row"
VARIANT = "variant"
MODEL_VERSION = "model_version"
INPUTS_HASH = "inputs_hash"
SCORE = "score"
TIME = "time"

PARTITION_KEY = "date"
"""The Hive partition key of the log's day folders (`date=YYYY-MM-DD`); a reader of the folder
sees it as one more column."""

PREDICTION_LOG_SCHEMA = pa.schema(
    [
        pa.field(REQUEST_ID, pa.string(), nullable=False),
        pa.field(ROW, pa.int32(), nullable=False),
        pa.field(VARIANT, pa.string(), nullable=False),
        pa.field(MODEL_VERSION, pa.string(), nullable=True),
        pa.field(INPUTS_HASH, pa.string(), nullable=False),
        pa.field(SCORE, pa.float64(), nullable=False),
        pa.field(TIME, pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
"""The columns of every log file, in this order."""

LOG_COLUMNS = tuple(PREDICTION_LOG_SCHEMA.names)


def row_hashes(frame: pd.DataFrame) -> list[str]:
    """Each row's hash as 16 hex digits (`hash_frames` of this one frame)."""
    return hex_digests(hash_frames([frame]))


def hex_digests(hashes: np.ndarray) -> list[str]:
    """64-bit hashes as the log's `inputs_hash` text: 16 lowercase hex digits each."""
    return [format(value, "016x") for value in hashes.tolist()]


def hash_frames(frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """A 64-bit hash of every row of `frames`, in order: the same values give the same hash in
    any process, on any machine, whatever pandas or numpy version.

    The hash is defined here rather than taken from `pandas.util.hash_pandas_object`, which is
    stable too but walks a frame column by column through pandas' own indexing: a millisecond
    for a one-row frame of twenty features, which a server logging every request cannot pay
    per request. Here the frames of a batch that have the same kinds of column are hashed
    together, one numpy operation per column for the whole batch.

    Each value hashes by what it means to the model: a number by its value as float64 (so a
    float32 feature and the same value in float64 agree; -0.0 is 0.0; every NaN is alike), a
    category by its text (not its code, which depends on the category list), anything else by
    its text; missing values all alike. A row's hash folds its columns' hashes in order
    through the splitmix64 finaliser; column names do not enter it. Callers hash the model's
    input frame (`ctloop.components.contract.model_input.to_frame`).

    Raises:
        ValueError: a frame without columns.
    """
    columns = [list(frame._iter_column_arrays()) for frame in frames]  # no Series per column
    groups: dict[tuple, list[int]] = {}
    for index, arrays in enumerate(columns):
        if not arrays:
            raise ValueError("cannot hash rows without columns")
        groups.setdefault(tuple(_kind(values) for values in arrays), []).append(index)
    pieces: list[np.ndarray] = [np.empty(0, np.uint64)] * len(frames)
    for kinds, members in groups.items():
        counts = [len(frames[member]) for member in members]
        hashes = np.full(sum(counts), _SEED, dtype=np.uint64)
        for position, kind in enumerate(kinds):
            parts = [columns[member][position] for member in members]
            hashes = _mix(hashes ^ _column_hashes(kind, parts))
        for member, piece in zip(members, np.split(hashes, np.cumsum(counts)[:-1]), strict=True):
            pieces[member] = piece
    return np.concatenate(pieces) if pieces else np.empty(0, np.uint64)


_SEED = np.uint64(0x243F6A8885A308D3)
_NUMBER = "number"
_TEXT = "text"


def _kind(values) -> str | tuple[str, ...]:
    """ "number", "text", or a categorical's categories (which its codes index)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return _NUMBER
    if isinstance(values, pd.Categorical):
        return tuple(str(category) for category in values.categories)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return _NUMBER
    return _TEXT


def _column_hashes(kind: str | tuple[str, ...], parts: list) -> np.ndarray:
    if kind == _NUMBER:
        numbers = np.concatenate(
            [
                part.to_numpy(dtype=np.float64, na_value=np.nan)
                if isinstance(part, pd.api.extensions.ExtensionArray)
                else np.asarray(part, dtype=np.float64)
                for part in parts
            ]
        )
        canonical = np.where(np.isnan(numbers), np.nan, numbers) + 0.0  # -0.0 + 0.0 is 0.0
        return _mix(canonical.view(np.uint64))
    if kind == _TEXT:
        texts = np.concatenate([np.asarray(part, dtype=object) for part in parts])
        return np.array([_text_hash(value) for value in texts.tolist()], dtype=np.uint64)
    # A categorical: each category's hash, then the missing value's, indexed by the codes
    # (code -1, missing, takes the last entry).
    table = np.array([*(_text_hash(category) for category in kind), _MISSING], dtype=np.uint64)
    return table[np.concatenate([part.codes for part in parts])]


def _text_hash(value) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return int(_MISSING)
    digest = hashlib.blake2b(str(value).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


_MISSING = int(_mix(np.array([np.nan]).view(np.uint64))[0])
