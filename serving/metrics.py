"""Prometheus metrics of the ctloop predictor, on the registry that KServe's `/metrics` serves.

Per request: an outcome counter, a latency histogram and a rows counter. Per row: the
distribution of the scores, which monitoring compares with the reference profile's prediction
distribution. `prometheus_client.Histogram.observe` takes one value at a time (about a
microsecond each, under a lock), which at 10,000 rows would cost as much as the scoring
itself, so per-row histograms are a small collector that bins a whole batch with numpy
(`BatchHistogram`).

With a shadow model (`ctloop.serving.shadow`), the paired figures of the rows both models
scored, labelled with the served version and the shadow's: rows compared, skipped (queue full)
and failed, disagreements at the label threshold, and the per-row score difference. Its mean
absolute difference is `ctloop_shadow_abs_score_difference`'s sum over its count.
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


class BatchHistogram:
    """A Prometheus histogram that takes a whole batch of values at once."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: tuple[float, ...],
        labels: tuple[str, ...] = _MODEL_LABELS,
        dtype: type = np.float64,
    ) -> None:
        """`dtype`: the precision values and bounds are compared in (see `ScoreHistogram`)."""
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self._dtype = dtype
        self._edges = np.asarray(buckets, dtype=dtype)
        self._bounds = [floatToGoString(bound) for bound in buckets] + ["+Inf"]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], tuple[np.ndarray, float]] = {}

    def observe_many(self, *label_values_and_values) -> None:
        """`observe_many(*label_values, values)`: count each value in the first bucket whose
        upper bound it does not exceed."""
        *key, values = label_values_and_values
        if len(key) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}; got {key}")
        slots = np.searchsorted(self._edges, np.asarray(values, dtype=self._dtype), side="left")
        counts = np.bincount(slots, minlength=len(self._edges) + 1)
        total = float(np.sum(values))
        series = tuple(key)
        with self._lock:
            previous, previous_sum = self._series.get(series, (np.zeros_like(counts), 0.0))
            self._series[series] = (previous + counts, previous_sum + total)

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
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


class ScoreHistogram(BatchHistogram):
    """`ctloop_prediction_score`: the scores a model returned, one per row."""

    def __init__(self, buckets: tuple[float, ...] = SCORE_BUCKETS) -> None:
        # Scores are float32: a score shown as 0.05 is 0.0500000007 in float64, yet belongs
        # in the le="0.05" bucket, so bounds and scores are compared as float32.
        super().__init__(
            "ctloop_prediction_score",
            "Scores returned by the model, one per row.",
            buckets,
            dtype=np.float32,
        )


SCORES = ScoreHistogram()
REGISTRY.register(SCORES)


SHADOW_LABELS = (*_MODEL_LABELS, "shadow_version")
"""The served model's name and version, and the shadow's version."""

SCORE_DIFFERENCE_BUCKETS = (
    -1, -0.5, -0.2, -0.1, -0.05, -0.02, -0.01, -0.005, -0.001,
    0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1,
)  # fmt: skip
"""Upper bounds of shadow - served score: symmetric, so a shadow that scores higher and one
that scores lower show alike; the bucket (-0.001, 0.001] holds the rows that agree. With
negative bounds the histogram has no `_sum` or `_count` series (OpenMetrics): its `+Inf` bucket
counts the rows."""
ABS_SCORE_DIFFERENCE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)
"""Upper bounds of |shadow - served|: policies bound it between 0.01 and 0.1."""

SHADOW_ROWS_COMPARED = Counter(
    "ctloop_shadow_rows_compared",
    "Rows scored by both the served model and the shadow.",
    SHADOW_LABELS,
)
SHADOW_ROWS_SKIPPED = Counter(
    "ctloop_shadow_rows_skipped",
    "Rows the shadow did not score because its queue was full.",
    SHADOW_LABELS,
)
SHADOW_ERRORS = Counter(
    "ctloop_shadow_errors",
    "Rows the shadow failed to score (an error, or a feature it needs that requests lack).",
    SHADOW_LABELS,
)
SHADOW_DISAGREEMENTS = Counter(
    "ctloop_shadow_disagreements",
    "Compared rows whose label at the 0.5 threshold differs between shadow and served model.",
    SHADOW_LABELS,
)
SHADOW_LATENCY = Histogram(
    "ctloop_shadow_latency_seconds",
    "Time the shadow took to score one round: the batches gathered, scored in one call off the "
    "request path.",
    SHADOW_LABELS,
    buckets=LATENCY_BUCKETS,
)
SHADOW_SCORE_DIFFERENCE = BatchHistogram(
    "ctloop_shadow_score_difference",
    "Shadow score minus served score, one per compared row.",
    SCORE_DIFFERENCE_BUCKETS,
    SHADOW_LABELS,
)
SHADOW_ABS_SCORE_DIFFERENCE = BatchHistogram(
    "ctloop_shadow_abs_score_difference",
    "Absolute difference of shadow and served score, one per compared row.",
    ABS_SCORE_DIFFERENCE_BUCKETS,
    SHADOW_LABELS,
)
REGISTRY.register(SHADOW_SCORE_DIFFERENCE)
REGISTRY.register(SHADOW_ABS_SCORE_DIFFERENCE)

PREDICTION_LOG_ROWS_SKIPPED = Counter(
    "ctloop_prediction_log_rows_skipped",
    "Scored rows not handed to the prediction log: the queue in front of it was full.",
)
