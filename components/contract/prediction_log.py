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
    """Each row's hash as 16 hex digits: the same values give the same text in any process.

    `pandas.util.hash_pandas_object` with its fixed default key hashes each value by its
    bytes (categoricals by their category's value, not its code) and combines a row's columns
    in order, without the index; unlike Python's `hash`, nothing is salted per process. The
    hash depends on the dtypes as well as the values, so callers hash the model's input frame
    (`ctloop.components.contract.model_input.to_frame`: float32 numbers, categoricals over the
    profile's categories), where equal rows always have equal dtypes.
    """
    if frame.shape[1] == 0:
        raise ValueError("cannot hash rows without columns")
    values = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    return [format(value, "016x") for value in values.tolist()]
