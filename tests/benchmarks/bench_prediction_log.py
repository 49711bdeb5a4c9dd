"""What the prediction log costs the server: per request on the request path and on its thread.

Run: `.venv/bin/python tests/benchmarks/bench_prediction_log.py [--requests 5000]`

Frames are the model contract's input form for 26 numeric (float32) and 4 categorical
features, as the serving benchmark's model takes. For requests of 1 and 100 rows it prints:

- `record()`: wall time of one call on the request path (a lock and an append);
- hash + table: CPU time per request of what the writer thread does to a batch of requests
  (`hash_frames` of the whole batch and the Arrow table), beside the same rows hashed one
  frame at a time through `pandas.util.hash_pandas_object`, the obvious alternative;
- end to end: rows a second through `PredictionLog` to Parquet files in a temporary folder
  (record every request, then `close()`), and the files written.

The thread's CPU is taken from the server's cores (and, in Python, its GIL): compare it with
the request cost in docs/performance.md. Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.serving import prediction_log
from ctloop.serving.prediction_log import PredictionLog

NUMERIC = 26
CATEGORIES = [["Month-to-month", "One year", "Two year"], ["No", "Yes"], ["DSL", "Fiber", "No"]]


def frames(requests: int, rows: int, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(requests):
        columns = {f"x{j}": rng.random(rows).astype(np.float32) for j in range(NUMERIC)}
        for j in range(4):
            categories = CATEGORIES[j % len(CATEGORIES)]
            codes = rng.integers(-1, len(categories), rows)
            columns[f"c{j}"] = pd.Categorical.from_codes(codes, categories=categories)
        out.append(pd.DataFrame(columns, copy=False))
    return out


def entries(batch: list[pd.DataFrame]) -> list:
    return [
        prediction_log._Entry(f"req-{i}", "v1", "1", frame, np.full(len(frame), 0.5), time.time())
        for i, frame in enumerate(batch)
    ]


def per_request_us(action, repeats: int) -> float:
    start = time.process_time()
    action()
    return (time.process_time() - start) / repeats * 1e6


def measure(requests: int, rows: int) -> None:
    batch = frames(requests, rows)
    logged = entries(batch)
    ours = per_request_us(lambda: prediction_log._log_table(logged), requests)
    pandas = per_request_us(
        lambda: [pd.util.hash_pandas_object(frame, index=False) for frame in batch], requests
    )
    with tempfile.TemporaryDirectory() as folder:
        log = PredictionLog(folder, max_pending_requests=requests + 1, max_pending_rows=10**9)
        start = time.perf_counter()
        for number, frame in enumerate(batch):
            log.record(
                request_id=f"req-{number}",
                variant="v1",
                model_version="1",
                frame=frame,
                scores=np.full(len(frame), 0.5),
            )
        recorded = time.perf_counter() - start
        log.close()
        elapsed = time.perf_counter() - start
        files = len(list(Path(folder).rglob("*.parquet")))
    print(
        f"{rows:>4} rows/request: record() {recorded / requests * 1e6:7.1f} us wall | "
        f"thread hash+table {ours:7.1f} us CPU/request (hash_pandas_object alone "
        f"{pandas:7.1f}) | end to end {requests * rows / elapsed:9.0f} rows/s, {files} file(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    for rows in (1, 100):
        measure(args.requests if rows == 1 else max(args.requests // 10, 1), rows)


if __name__ == "__main__":
    main()
