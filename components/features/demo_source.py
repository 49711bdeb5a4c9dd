"""The demo's table as a Feast source: customer snapshots and the labelled entity rows.

The Telco churn table has neither customer ids nor times. Here each row becomes customer
`row number` whose features were snapshotted at `as_of`, and whose churn label was observed a
day later: the entity table (`customer_id`, `event_timestamp`, `churn`) then joins, point in
time, to exactly the snapshot a model could have seen.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ctloop.components.features.repo import ENTITY_KEY, FEATURES, TIMESTAMP
from ctloop.components.table_io import read_table, write_parquet

LABEL_DELAY = timedelta(days=1)


def write_demo_source(
    table_uri: str, source_path: Path, entity_path: Path, as_of: datetime, target: str = "churn"
) -> None:
    """Split the demo table into the feature source and the entity table (both Parquet)."""
    table = read_table(table_uri)
    ids = pa.array(range(1, table.num_rows + 1), pa.int64())
    stamp = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    snapshot = pa.table(
        {
            ENTITY_KEY: ids,
            TIMESTAMP: pa.repeat(stamp, table.num_rows),
            **{name: table.column(name) for name in FEATURES},
        }
    )
    labelled = pa.table(
        {
            ENTITY_KEY: ids,
            TIMESTAMP: pc.add(pa.repeat(stamp, table.num_rows), pa.scalar(LABEL_DELAY)),
            target: table.column(target),
        }
    )
    write_parquet(snapshot, source_path)
    write_parquet(labelled, entity_path)
