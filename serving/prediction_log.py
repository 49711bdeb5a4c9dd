"""The prediction log writer: every scored row, written to rolling Parquet files off the request
path.

An A/B experiment is judged on outcomes that arrive days later, joined to what each variant
answered; this writer records what was answered (schema and row hash:
`ctloop.components.contract.prediction_log`). A request must never wait for it or fail
because of it, so `record` only appends the request's frame and scores to a bounded buffer
under a lock and returns; when the buffer holds `max_pending_rows` rows not yet written (or
`max_pending_requests` frames not yet hashed), the request's rows are dropped and counted
(`ctloop_prediction_log_rows_dropped_total`, reason `buffer_full`) rather than waited for.
One background thread hashes the queued frames in batches soon after they come (a frame holds
kilobytes, a hashed row a hundred bytes), and writes a file whenever `rows_per_file` rows are
waiting or the oldest has waited `flush_interval_s`, so files stay few when traffic is high
and rows still land within the interval when it is low.

Files go to `<uri>/date=YYYY-MM-DD/part-<UTC time>-<random>.parquet` (the day of the rows'
answers), through any filesystem pyarrow opens (a local path, file://, s3://, gs://, hdfs://).
Each file is written whole under a hidden name (`.part-….parquet.partial`, which Parquet
dataset readers skip) and then renamed, so a reader never sees half a file. A log that cannot
be written (no permission, no bucket) is reported once in the server's log until a write
succeeds again; the rows of each failed write are counted as dropped (reason `write_failed`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq
from prometheus_client import Counter

from ctloop.components.contract import prediction_log as contract

logger = logging.getLogger(__name__)

ROWS_DROPPED = Counter(
    "ctloop_prediction_log_rows_dropped",
    "Scored rows the prediction log did not write: buffer_full (the writer fell behind), "
    "write_failed (the log's storage refused the file), invalid (rows that could not be "
    "hashed), closed (recorded after close).",
    ["reason"],
)
GATHER_S = 0.05
"""How long the writer thread lets requests gather before it hashes them together: one batch
of many small frames costs far less than as many batches of one."""

ROWS_WRITTEN = Counter(
    "ctloop_prediction_log_rows_written", "Scored rows written to the prediction log."
)


@dataclass(frozen=True)
class _Entry:
    """One request's rows, as `record` got them: hashing and conversion wait for the thread."""

    request_id: str
    variant: str
    model_version: str | None
    frame: pd.DataFrame
    scores: np.ndarray
    time: float


class PredictionLog:
    """Writes every recorded row to rolling Parquet files under `uri` (see the module docstring).

    Args:
        uri: A local folder or a pyarrow filesystem URI (s3://bucket/log, gs://…).
        rows_per_file: A file is written as soon as this many rows wait; no file holds more.
        flush_interval_s: The longest a recorded row waits before it is written.
        max_pending_rows: Rows recorded but not yet written beyond which `record` drops
            (about 100 bytes each once the thread has hashed them).
        max_pending_requests: Requests whose frames the thread has not yet hashed beyond
            which `record` drops: a pandas frame costs kilobytes however few its rows, so
            this bounds the memory of a thread that falls behind.
    """

    def __init__(
        self,
        uri: str,
        *,
        rows_per_file: int = 100_000,
        flush_interval_s: float = 60.0,
        max_pending_rows: int = 200_000,
        max_pending_requests: int = 5_000,
    ) -> None:
        for name, value in (
            ("rows_per_file", rows_per_file),
            ("flush_interval_s", flush_interval_s),
            ("max_pending_rows", max_pending_rows),
            ("max_pending_requests", max_pending_requests),
        ):
            if not value > 0:
                raise ValueError(f"prediction log: {name} must be > 0, got {value!r}")
        self.uri = uri
        self.rows_per_file = int(rows_per_file)
        self.flush_interval_s = float(flush_interval_s)
        self.max_pending_rows = int(max_pending_rows)
        self.max_pending_requests = int(max_pending_requests)
        self._filesystem, self._root = _filesystem(uri)
        self._condition = threading.Condition()
        self._queue: deque[_Entry | threading.Event] = deque()
        self._queued_requests = 0
        self._held_rows = 0  # recorded and not yet written (queued, or hashed and waiting)
        self._closed = False
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def record(
        self,
        *,
        request_id: str,
        variant: str,
        model_version: str | None,
        frame: pd.DataFrame,
        scores: np.ndarray,
    ) -> None:
        """Queue one request's rows for the log; never blocks on I/O and never raises."""
        try:
            rows = len(frame)
            if len(scores) != rows:
                raise ValueError(f"{len(scores)} scores for {rows} rows")
            entry = _Entry(request_id, variant, model_version, frame, scores, time.time())
            with self._condition:
                if self._closed:
                    reason = "closed"
                elif (
                    self._held_rows + rows > self.max_pending_rows
                    or self._queued_requests >= self.max_pending_requests
                ):
                    reason = "buffer_full"
                else:
                    reason = None
                    if not self._queue:  # the thread waits for the first one
                        self._condition.notify()
                    self._queue.append(entry)
                    self._queued_requests += 1
                    self._held_rows += rows
            if reason is not None:
                ROWS_DROPPED.labels(reason).inc(rows)
        except Exception:  # the request must be answered whatever the log does
            logger.exception("prediction log: a request's rows could not be recorded")

    def flush(self, timeout_s: float | None = None) -> bool:
        """Write every row recorded so far; True when done within `timeout_s`."""
        done = threading.Event()
        with self._condition:
            closed = self._closed
            if not closed:
                self._queue.append(done)
                self._condition.notify()
        if closed:  # close writes everything: wait for it
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return done.wait(timeout_s)

    def close(self, timeout_s: float | None = None) -> None:
        """Write what is recorded, then stop the writer thread (later rows are dropped)."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(timeout_s)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self) -> None:
        """Hash what is queued soon after it comes (frames are large, hashed rows small), in
        batches gathered over `GATHER_S`; write when a file is full or its oldest row is due."""
        waiting: list[pa.Table] = []
        waiting_rows = 0
        oldest: float | None = None
        while True:
            with self._condition:
                while not self._queue and not self._closed:
                    timeout = None if oldest is None else oldest + self.flush_interval_s
                    if timeout is not None and timeout <= time.time():
                        break
                    self._condition.wait(None if timeout is None else timeout - time.time())
                gather = not self._closed and all(isinstance(item, _Entry) for item in self._queue)
            if gather:  # nobody waits for a flush: let more requests come for this batch
                time.sleep(min(GATHER_S, self.flush_interval_s))
            with self._condition:
                taken = list(self._queue)
                self._queue.clear()
                self._queued_requests = 0
                closing = self._closed
            entries = [item for item in taken if isinstance(item, _Entry)]
            if entries:
                table = self._hashed(entries)
                if table is not None:
                    waiting.append(table)
                    waiting_rows += table.num_rows
                    oldest = entries[0].time if oldest is None else oldest
            due = (
                closing
                or len(entries) < len(taken)  # a flush() is waiting
                or waiting_rows >= self.rows_per_file
                or (oldest is not None and time.time() >= oldest + self.flush_interval_s)
            )
            if due and waiting:
                self._write(waiting)
                with self._condition:
                    self._held_rows -= waiting_rows
                waiting, waiting_rows, oldest = [], 0, None
            for item in taken:
                if isinstance(item, threading.Event):
                    item.set()
            if closing:
                return

    def _hashed(self, entries: list[_Entry]) -> pa.Table | None:
        """The entries as a table of the log's schema; None (rows dropped) when they are not
        rows at all."""
        try:
            return _log_table(entries)
        except Exception:  # a frame the contract cannot hash: the caller's bug, not the log's
            rows = sum(len(entry.frame) for entry in entries)
            logger.exception("prediction log: %d rows could not be hashed", rows)
            ROWS_DROPPED.labels("invalid").inc(rows)
            with self._condition:
                self._held_rows -= rows
            return None

    def _write(self, tables: list[pa.Table]) -> None:
        rows = sum(table.num_rows for table in tables)
        try:
            for day, part in _days(pa.concat_tables(tables)):
                for start in range(0, part.num_rows, self.rows_per_file):
                    self._write_file(day, part.slice(start, self.rows_per_file))
        except Exception as error:  # a broken log must not stop the server or its thread
            if not self._failing:
                logger.error(
                    "prediction log %r cannot be written (%s: %s); rows are dropped and "
                    "counted in ctloop_prediction_log_rows_dropped_total until it can",
                    self.uri,
                    type(error).__name__,
                    error,
                )
            self._failing = True
            ROWS_DROPPED.labels("write_failed").inc(rows)
            return
        if self._failing:
            logger.info("prediction log %r is written again", self.uri)
        self._failing = False
        ROWS_WRITTEN.inc(rows)

    def _write_file(self, day: str, table: pa.Table) -> None:
        folder = f"{self._root}/{contract.PARTITION_KEY}={day}"
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        partial = f"{folder}/.{name}.partial"
        self._filesystem.create_dir(folder, recursive=True)
        try:
            with self._filesystem.open_output_stream(partial) as stream:
                pq.write_table(table, stream)
            self._filesystem.move(partial, f"{folder}/{name}")
        except BaseException:
            try:
                self._filesystem.delete_file(partial)
            except (OSError, pa.ArrowException):
                pass  # never created, or the store refuses everything: the error below says
            raise


def _log_table(entries: list[_Entry]) -> pa.Table:
    """The entries' rows as one table of the log's schema (hashing happens here)."""
    counts = [len(entry.frame) for entry in entries]
    versions = [entry.model_version for entry in entries]
    arrays = [
        pa.array(np.repeat([entry.request_id for entry in entries], counts), pa.string()),
        pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts])),
        pa.array(np.repeat([entry.variant for entry in entries], counts), pa.string()),
        pa.array(np.repeat(np.array(versions, dtype=object), counts), pa.string()),
        pa.array(contract.hex_digests(contract.hash_frames([entry.frame for entry in entries]))),
        pa.array(np.concatenate([np.asarray(entry.scores, np.float64) for entry in entries])),
        pa.array(
            np.repeat([int(entry.time * 1e6) for entry in entries], counts),
            pa.timestamp("us", tz="UTC"),
        ),
    ]
    return pa.Table.from_arrays(arrays, schema=contract.PREDICTION_LOG_SCHEMA)


def _days(table: pa.Table) -> list[tuple[str, pa.Table]]:
    """The table split by the UTC day of its `time` column, as YYYY-MM-DD."""
    days = pc.strftime(table.column(contract.TIME), format="%Y-%m-%d")
    unique = pc.unique(days).to_pylist()
    if len(unique) == 1:
        return [(unique[0], table)]
    return [(day, table.filter(pc.equal(days, day))) for day in sorted(unique)]


def _filesystem(uri: str) -> tuple[pa_fs.FileSystem, str]:
    """The filesystem and path of a local folder or a pyarrow filesystem URI."""
    if "://" not in uri:
        return pa_fs.LocalFileSystem(), os.path.abspath(uri).rstrip("/")
    try:
        filesystem, path = pa_fs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(
            f"prediction log {uri!r}: no filesystem can open this URI: {error}"
        ) from error
    return filesystem, path.rstrip("/")
