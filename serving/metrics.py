"""Prometheus metrics of the ctloop predictor, on the registry that KServe's `/metrics` serves.

Per request: an outcome counter, a latency histogram and a rows counter. Per row: the
distribution of the scores, which monitoring compares with the reference profile's prediction
distribution. `prometheus_client.Histogram.observe` takes one value at a time (about a
microsecond each, under a lock), which at 10,000 rows would cost as much as the scoring
itself, so the score histogram is a small collector that bins a whole batch with numpy.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

SCORE_BUCKETS = tuple(round(0.05 * step, 2) for step in range(1, 21))
"""Upper bounds 0.05, 0.10, ..., 1.0 (plus +Inf) of the score histogram."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Upper bounds in seconds of the latency histogram: prometheus_client's defaults start at
5 ms, under which most requests fall, so every p99 would read just under 5 ms and a canary
several times slower than its primary could look the same. These start at 0.5 ms and go in
1-2.5-5 steps up to 10 s (the 200 ms latency alert reads between 0.1 and 0.25)."""

OUTCOMES = ("ok", "invalid", "error")
"""ok: scored; invalid: rejected with HTTP 400; error: failed in the server (HTTP 500)."""

_MODEL_LABELS = ("model_name", "model_version")

NO_VERSION = ""
"""`model_version` of a model served without a known version: an empty label value, which
Prometheus treats as no label, so no made-up version appears on a dashboard or matches a
canary's version selector."""

PREDICTIONS = Counter(
    "ctloop_predictions",
    "Prediction requests by outcome (ok, invalid, error).",
    [*_MODEL_LABELS, "outcome"],
)
LATENCY = Histogram(
    "ctloop_prediction_latency_seconds",
    "Time to decode, check and score one successful request.",
    _MODEL_LABELS,
    buckets=LATENCY_BUCKETS,
)
ROWS_SCORED = Counter("ctloop_rows_scored", "Rows scored by successful requests.", _MODEL_LABELS)


class ScoreHistogram:
    """`ctloop_prediction_score`: a Prometheus histogram that takes a whole batch at once."""

    name = "ctloop_prediction_score"

    def __init__(self, buckets: tuple[float, ...] = SCORE_BUCKETS) -> None:
        # Scores are float32: a score shown as 0.05 is 0.0500000007 in float64, yet belongs
        # in the le="0.05" bucket, so bounds and scores are compared as float32.
        self._edges = np.asarray(buckets, dtype=np.float32)
        self._bounds = [floatToGoString(bound) for bound in buckets] + ["+Inf"]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], tuple[np.ndarray, float]] = {}

    def observe_many(self, model_name: str, model_version: str, scores: np.ndarray) -> None:
        """Count each score in the first bucket whose upper bound it does not exceed."""
        slots = np.searchsorted(self._edges, np.asarray(scores, dtype=np.float32), side="left")
        counts = np.bincount(slots, minlength=len(self._edges) + 1)
        total = float(np.sum(scores))
        key = (model_name, model_version)
        with self._lock:
            previous, previous_sum = self._series.get(key, (np.zeros_like(counts), 0.0))
            self._series[key] = (previous + counts, previous_sum + total)

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            self.name, "Scores returned by the model, one per row.", labels=_MODEL_LABELS
        )
        with self._lock:
            series = dict(self._series)
        for labels, (counts, total) in series.items():
            cumulative = np.cumsum(counts)
            family.add_metric(
                list(labels),
                buckets=[
                    (bound, float(count))
                    for bound, count in zip(self._bounds, cumulative, strict=True)
                ],
                sum_value=total,
            )
        return [family]


SCORES = ScoreHistogram()
REGISTRY.register(SCORES)
