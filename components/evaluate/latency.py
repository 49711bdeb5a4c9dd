"""Scoring time of the candidate beside the champion's, timed in the same process, interleaved.

An absolute budget on one model's tail latency judges the node as much as the model: on a node
whose CPUs are shared, a p95 of twenty 1000-row scorings moved past 100 ms for a model that
scores well within it on an idle one. So the gate compares the candidate with the champion
timed alongside it: calls alternate (candidate, champion, candidate, ...), so both see the same
contention at nearly the same moments, and each is summarised by its median and minimum over
many calls, which a few slow calls (a preempted process, a page fault) do not move the way they
move a p95. The ratio of the medians then says what the model costs relative to the one it
would replace, whatever else the node is doing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

LATENCY_BATCH_ROWS = 1000
"""Rows in the batch each timed call scores."""
LATENCY_ROUNDS = 31
"""Timed calls of each model: enough that the median ignores a few preempted calls; odd, so
the median is one of the calls."""


class LatencyError(ValueError):
    """Nothing to time, or a timing request that cannot be honoured."""


def latency_batch(frame: pd.DataFrame, batch_rows: int = LATENCY_BATCH_ROWS) -> pd.DataFrame:
    """The first `batch_rows` rows of `frame`, cycled to that length when it is shorter.

    Take the same rows of each model's own frame (its feature order and categories), so
    candidate and champion are timed on identical records.
    """
    if frame.empty:
        raise LatencyError("cannot time scoring on an empty frame")
    if batch_rows < 1:
        raise LatencyError(f"batch_rows ({batch_rows}) must be >= 1")
    return frame.iloc[np.resize(np.arange(min(batch_rows, len(frame))), batch_rows)]


def interleaved_latency(
    scorers: Mapping[str, Callable[[], object]],
    rounds: int = LATENCY_ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[str, float]]:
    """Time each scorer `rounds` times, in turn within each round, after one warm-up call each.

    Args:
        scorers: Name -> a call that scores one batch (e.g. "candidate", "champion").
        rounds: Timed calls of each scorer.
        clock: Seconds, monotonic (`time.perf_counter`; a test gives a fake one).

    Returns:
        Name -> {"median_ms", "min_ms"} over its timed calls.
    """
    if not scorers:
        raise LatencyError("no scorer to time")
    if rounds < 1:
        raise LatencyError(f"rounds ({rounds}) must be >= 1")
    for score in scorers.values():
        score()  # warm-up: first-call costs (lazy loading, allocation) are not scoring time
    timings: dict[str, list[float]] = {name: [] for name in scorers}
    for _ in range(rounds):
        for name, score in scorers.items():
            started = clock()
            score()
            timings[name].append((clock() - started) * 1000.0)
    return {
        name: {"median_ms": float(statistics.median(ms)), "min_ms": float(min(ms))}
        for name, ms in timings.items()
    }
