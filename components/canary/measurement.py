"""What canary analysis reads from Prometheus: each version's figures over a window.

Both model versions are served under one model name; the predictor labels its Prometheus
metrics (`ctloop.serving.metrics`) with `model_name` and `model_version`, so one Prometheus
tells them apart by the version label alone. Every figure is an `increase()` over the
analysis window (from the start of the analysis to now), so the primary's traffic before the
canary existed does not count. The PromQL is kept here, in one place, because the alert rules
(`manifests/`) must read the same series and a test holds them to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctloop.components.canary.prometheus import PrometheusClient

# Series of the ctloop predictor (serving/metrics.py), as Prometheus names them.
REQUESTS_QUERY = "sum by (outcome) (increase(ctloop_predictions_total{%s}[%s]))"
P99_QUERY = (
    "histogram_quantile(0.99, sum by (le) "
    "(increase(ctloop_prediction_latency_seconds_bucket{%s}[%s])))"
)
SCORES_QUERY = "sum by (le) (increase(ctloop_prediction_score_bucket{%s}[%s]))"
TOTALS_QUERY = "sum by (outcome) (ctloop_predictions_total{%s})"
TIMELINE_ROWS = 12


@dataclass(frozen=True)
class CanaryTarget:
    """Which metrics are whose: the served model name, the two versions behind it and,
    on a cluster, the namespace the predictors run in."""

    model_name: str
    canary_version: str
    primary_version: str
    namespace: str | None = None
    """The `namespace` label Prometheus Operator gives every scraped series; None matches
    any. Without it, a Prometheus that scrapes several environments, each serving the same
    model name with its own registry's version numbers, would mix their series."""


@dataclass(frozen=True)
class Measurement:
    """One version's figures over the analysis window."""

    requests: float
    failed: float
    p99_ms: float | None
    score_counts: np.ndarray | None
    """Rows per score-histogram bucket (not cumulative), None when nothing was scored."""

    @property
    def error_rate(self) -> float | None:
        return self.failed / self.requests if self.requests > 0 else None

    def to_json(self) -> dict[str, Any]:
        """The figures as JSON values: what a decision record pins of one reading."""
        counts = None if self.score_counts is None else self.score_counts.tolist()
        return {
            "requests": self.requests,
            "failed": self.failed,
            "p99_ms": self.p99_ms,
            "score_counts": counts,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Measurement:
        """The figures `to_json` wrote (JSON floats read back exactly, so a replay judges the
        very numbers the analysis judged)."""
        counts = document["score_counts"]
        return cls(
            requests=float(document["requests"]),
            failed=float(document["failed"]),
            p99_ms=None if document["p99_ms"] is None else float(document["p99_ms"]),
            score_counts=None if counts is None else np.asarray(counts, dtype=np.float64),
        )


def selector(target: CanaryTarget, model_version: str) -> str:
    """The PromQL label matchers of one version's series."""
    matchers = f"model_name={_quoted(target.model_name)},model_version={_quoted(model_version)}"
    if target.namespace is not None:
        matchers += f",namespace={_quoted(target.namespace)}"
    return matchers


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def measure(
    prometheus: PrometheusClient, target: CanaryTarget, version: str, start: float, end: float
) -> Measurement:
    """One version's requests, failures, p99 latency and score counts from `start` to `end`."""
    matchers, window = selector(target, version), _range(end - start)
    by_outcome = {
        sample.labels.get("outcome", ""): sample.value
        for sample in prometheus.query(REQUESTS_QUERY % (matchers, window), at=end)
    }
    requests = sum(by_outcome.values())
    failed = sum(count for outcome, count in by_outcome.items() if outcome != "ok")
    p99 = [s.value for s in prometheus.query(P99_QUERY % (matchers, window), at=end)]
    buckets = sorted(
        (float(sample.labels["le"]), sample.value)
        for sample in prometheus.query(SCORES_QUERY % (matchers, window), at=end)
        if "le" in sample.labels
    )
    cumulative = np.maximum.accumulate(np.asarray([count for _le, count in buckets], float))
    counts = np.diff(cumulative, prepend=0.0) if len(cumulative) else None
    return Measurement(
        requests=requests,
        failed=failed,
        p99_ms=p99[0] * 1000.0 if p99 and math.isfinite(p99[0]) else None,
        score_counts=counts if counts is not None and counts.sum() > 0 else None,
    )


def timeline(
    prometheus: PrometheusClient, target: CanaryTarget, start: float, end: float, step_s: float
) -> list[dict[str, Any]]:
    """Requests and failures of both versions per interval (at most `TIMELINE_ROWS`, each
    at least `step_s` long), for a person reading when a canary started to fail.

    From the raw counters at each interval's edges, so an interval shorter than a few scrape
    intervals still counts exactly (an `increase()` over it would hold too few samples).
    """
    resolution = max(step_s, (end - start) / TIMELINE_ROWS)
    if end - start < resolution:
        return []
    # Intervals end at `end`; what precedes the first whole one (less than one) is left out.
    first = end - math.floor((end - start) / resolution + 1e-9) * resolution
    rows: dict[float, dict[str, Any]] = {}
    for side, version in (("canary", target.canary_version), ("primary", target.primary_version)):
        promql = TOTALS_QUERY % selector(target, version)
        for sample in prometheus.query_range(promql, first, end, resolution):
            failed = sample.labels.get("outcome") != "ok"
            previous = 0.0  # a series that appears later started from 0
            for at, total in sample.points:
                count = total - previous if total >= previous else total  # a restart resets
                previous = total
                if at <= first:
                    continue  # the baseline
                row = rows.setdefault(at, {"time": at})
                row[f"{side}_requests"] = row.get(f"{side}_requests", 0.0) + count
                row[f"{side}_failed"] = row.get(f"{side}_failed", 0.0) + (count if failed else 0)
    return [rows[at] for at in sorted(rows)]
