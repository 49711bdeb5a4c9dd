"""`GatheringQueue`: hands batches of rows from requests to one background thread, in rounds.

What the predictor does with a scored batch besides answering (score it with a shadow model,
turn it into the prediction log's frame) must not slow the answer, and costs a fixed amount
per call that dwarfs the per-row cost (scoring one row costs about as much as a hundred; a
frame of one row as much as one of a hundred: docs/performance.md). So `put` only appends to a
queue bounded in rows (a batch that does not fit is skipped and counted, never waited for) and
the thread lets batches gather for up to `GATHER_S`, then handles all of them in one call:
one wake-up, one stretch of Python under the GIL taken from the event loop, however many
requests arrived.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

GATHER_S = 0.05
"""How long the thread lets batches gather after the first arrives (less when a full round's
rows wait): the work waits no longer than this."""
MAX_ROWS_PER_ROUND = 10_000
"""Most rows handled in one round: enough to amortise the call, small enough that the queue's
space comes back in steps."""

logger = logging.getLogger(__name__)


class GatheringQueue:
    """A queue of `(rows, item)` bounded in rows, drained in rounds by `handle(items)` on a
    daemon thread named `name`; `skipped(rows)` is called for each batch that did not fit."""

    def __init__(
        self,
        name: str,
        max_rows: int,
        handle: Callable[[list[Any]], None],
        skipped: Callable[[int], None],
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"{name}: queue rows = {max_rows} must be >= 1")
        self.name = name
        self.max_rows = max_rows
        self._handle = handle
        self._skipped = skipped
        self._pending: deque[tuple[int, Any]] = deque()
        self._pending_rows = 0
        self._unfinished = 0  # batches accepted and not yet handled
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, rows: int, item: Any) -> None:
        """Queue a batch of `rows` rows, or skip it when it does not fit. Never waits, never
        raises: the caller is answering a request."""
        try:
            with self._changed:
                accepted = not self._closing and self._pending_rows + rows <= self.max_rows
                if accepted:
                    # The thread waits for the first batch, then for GATHER_S unless a full
                    # round's rows wait: wake it for either, not for every batch.
                    if not self._pending or (
                        self._pending_rows < MAX_ROWS_PER_ROUND <= self._pending_rows + rows
                    ):
                        self._changed.notify_all()
                    self._pending.append((rows, item))
                    self._pending_rows += rows
                    self._unfinished += 1
            if not accepted:
                self._skipped(rows)
        except Exception:  # noqa: BLE001 - the request must not see the side work's problems
            logger.exception("%s: a batch could not be queued", self.name)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every accepted batch is handled; False if `timeout_s` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._unfinished == 0, timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting batches, handle those pending at once (the server is stopping: a
        prediction log gets its last rows), and stop the thread; wait at most `timeout_s`."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closing)
                self._changed.wait_for(
                    lambda: self._closing or self._pending_rows >= MAX_ROWS_PER_ROUND, GATHER_S
                )
                if not self._pending:  # closed, and all handed over
                    return
                taken, rows = [], 0
                while self._pending and (
                    not taken or rows + self._pending[0][0] <= MAX_ROWS_PER_ROUND
                ):
                    batch_rows, item = self._pending.popleft()
                    taken.append(item)
                    rows += batch_rows
                self._pending_rows -= rows
            try:
                self._handle(taken)
            except Exception:  # noqa: BLE001 - the thread must outlive a failing round
                logger.exception("%s: a round failed", self.name)
            finally:
                with self._changed:
                    self._unfinished -= len(taken)
                    self._changed.notify_all()
