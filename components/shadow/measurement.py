"""The paired figures of a shadow: from Prometheus, from one predictor's `/metrics`, or offline.

A predictor with a shadow model counts, per row the served model answered, whether the shadow
scored it too (`ctloop_shadow_rows_compared_total`), could not be given it because its queue
was full (`_rows_skipped_total`) or failed on it (`_errors_total`), and whether the two 0/1
labels differ (`_disagreements_total`); histograms hold the per-row score difference (shadow −
served) and its absolute value, and the shadow's scoring time per batch. Every series carries
`model_name`, `model_version` (the served model) and `shadow_version`.

The signed difference's histogram has negative bounds, and a histogram with negative buckets
has no `_sum` (prometheus_client leaves it out, following OpenMetrics), so its mean cannot be
read; its buckets give, exactly, how many rows the shadow scored higher and how many lower than
the served model, beyond the band around 0 where the two agree (`AGREEMENT`).

Three readers give the same `ShadowFigures`, so a decision reads alike whichever was used:

- `measure`: Prometheus, each figure an `increase()` over the analysis window summed over the
  predictor's replicas, so rows from before the analysis started do not count. A mean is
  `increase(_sum)` over `increase(_count)` of its histogram: exact, not a bucket estimate.
- `metrics_text_figures`: one predictor's `/metrics` page (a laptop, the demo), parsed with
  prometheus_client's own parser: totals since that predictor started, which for a predictor
  started for the shadow stage are the stage's.
- `offline_figures`: the same figures from two arrays of scores, e.g. both models run on a
  table; a test holds the predictor's counting to it.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ctloop.components.canary.prometheus import PrometheusClient

LABEL_THRESHOLD = 0.5
"""A row's 0/1 label is 1 where its score is >= this: the predictor's `LABEL_THRESHOLD`
(`ctloop.serving.predictor`), which counts disagreements; a test keeps the two the same."""

# Series of the ctloop predictor (serving/metrics.py), as Prometheus names them.
ROWS_COMPARED = "ctloop_shadow_rows_compared_total"
ROWS_SKIPPED = "ctloop_shadow_rows_skipped_total"
ERRORS = "ctloop_shadow_errors_total"
DISAGREEMENTS = "ctloop_shadow_disagreements_total"
SCORE_DIFFERENCE = "ctloop_shadow_score_difference"
ABS_SCORE_DIFFERENCE = "ctloop_shadow_abs_score_difference"
LATENCY = "ctloop_shadow_latency_seconds"
_COUNTERS = (ROWS_COMPARED, DISAGREEMENTS, ERRORS, ROWS_SKIPPED)
_MEANS = (ABS_SCORE_DIFFERENCE, LATENCY)

AGREEMENT = 0.001
"""Scores within (-AGREEMENT, AGREEMENT] of each other agree: the bounds around 0 of the
signed difference's buckets (`ctloop.serving.metrics`), which a test keeps the same."""

COUNTER_QUERY = "sum(increase(%s{%s}[%s]))"
MEAN_QUERY = "sum(increase(%s_sum{%s}[%s])) / sum(increase(%s_count{%s}[%s]))"
BUCKETS_QUERY = "sum by (le) (increase(%s_bucket{%s}[%s]))"


class MetricsEndpointError(RuntimeError):
    """A predictor's `/metrics` that could not be read: naming the URL and why."""


@dataclass(frozen=True)
class ShadowTarget:
    """Whose figures: the served model's name, the shadow's version and, optionally, the
    served version and the namespace. An empty field matches any value."""

    model_name: str
    shadow_version: str
    served_version: str = ""
    namespace: str = ""
    """The `namespace` label Prometheus Operator gives every scraped series: a Prometheus that
    scrapes several environments, each serving the same model name, would otherwise add
    their rows together."""

    def labels(self) -> dict[str, str]:
        """The label values the target asks for (empty fields left out)."""
        wanted = {
            "model_name": self.model_name,
            "model_version": self.served_version,
            "shadow_version": self.shadow_version,
            "namespace": self.namespace,
        }
        return {name: value for name, value in wanted.items() if value}

    def describe(self) -> str:
        """The target in a sentence's words, e.g. "shadow version 3 of model churn"."""
        text = (
            f"shadow version {self.shadow_version or '(any)'} of model {self.model_name or '(any)'}"
        )
        if self.served_version:
            text += f" against served version {self.served_version}"
        return text + (f" in namespace {self.namespace}" if self.namespace else "")


@dataclass(frozen=True)
class ShadowFigures:
    """A shadow's paired figures over one window. Counts are rows; the means are per row
    compared (per batch for latency), None when there was none."""

    compared: float
    disagreements: float
    errors: float
    skipped: float
    mean_abs_difference: float | None
    scored_higher: float | None
    """Compared rows the shadow scored more than `AGREEMENT` above the served model."""
    scored_lower: float | None
    """Compared rows the shadow scored at least `AGREEMENT` below the served model."""
    mean_latency_s: float | None = None

    @property
    def given(self) -> float:
        """Rows handed to the shadow: scored (compared) or failed."""
        return self.compared + self.errors

    @property
    def served(self) -> float:
        """Rows the served model answered while the shadow ran."""
        return self.given + self.skipped

    @property
    def disagreement_rate(self) -> float | None:
        return _share(self.disagreements, self.compared)

    @property
    def error_rate(self) -> float | None:
        return _share(self.errors, self.given)

    @property
    def skipped_fraction(self) -> float | None:
        return _share(self.skipped, self.served)


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def selector(target: ShadowTarget) -> str:
    """The PromQL label matchers of the target's series."""
    return ",".join(f"{name}={_quoted(value)}" for name, value in target.labels().items())


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _range(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def measure(
    prometheus: PrometheusClient, target: ShadowTarget, start: float, end: float
) -> ShadowFigures:
    """The target's figures from `start` to `end` (Unix seconds), summed over replicas."""
    matchers, window = selector(target), _range(end - start)

    def scalar(promql: str) -> float | None:
        values = [sample.value for sample in prometheus.query(promql, at=end)]
        return values[0] if values and math.isfinite(values[0]) else None

    counts = [scalar(COUNTER_QUERY % (name, matchers, window)) or 0.0 for name in _COUNTERS]
    abs_difference, latency = (
        scalar(MEAN_QUERY % (name, matchers, window, name, matchers, window)) for name in _MEANS
    )
    buckets = {
        float(sample.labels["le"]): sample.value
        for sample in prometheus.query(BUCKETS_QUERY % (SCORE_DIFFERENCE, matchers, window), at=end)
        if "le" in sample.labels
    }
    return ShadowFigures(*counts, abs_difference, *_higher_lower(buckets), latency)


def _higher_lower(cumulative: dict[float, float]) -> tuple[float | None, float | None]:
    """(scored higher, scored lower) from the signed difference's cumulative bucket counts
    by upper bound; None, None when the histogram lacks the bounds (or is not there)."""
    total, up_to_low, up_to_high = (cumulative.get(b) for b in (math.inf, -AGREEMENT, AGREEMENT))
    if total is None or up_to_low is None or up_to_high is None:
        return None, None
    return total - up_to_high, up_to_low


def metrics_text_figures(
    text: str, target: ShadowTarget, *, where: str = ""
) -> tuple[ShadowFigures, ShadowTarget]:
    """The target's figures from a predictor's `/metrics` text (totals since it started), and
    the target with the labels of the series found filled in where it left them empty.

    Raises:
        ValueError: the text is not Prometheus's text format, or the series that match the
            target belong to more than one (model, served version, shadow version): which one
            is meant must then be said.
    """
    wanted = target.labels()
    totals: dict[str, float] = {}
    buckets: dict[float, float] = {}
    series: set[tuple[str, str, str]] = set()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.startswith("ctloop_shadow_") or any(
                    labels.get(name) != value for name, value in wanted.items()
                ):
                    continue
                if sample.name == f"{SCORE_DIFFERENCE}_bucket":
                    bound = float(labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name.endswith(("_total", "_sum", "_count")):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
                else:
                    continue
                series.add(
                    tuple(
                        labels.get(n, "") for n in ("model_name", "model_version", "shadow_version")
                    )
                )
    except ValueError as error:
        raise ValueError(
            f"{where or 'metrics text'} is not Prometheus text format: {error}"
        ) from error
    if len(series) > 1:
        found = "; ".join(
            f"model_name={m!r} model_version={v!r} shadow_version={s!r}"
            for m, v, s in sorted(series)
        )
        raise ValueError(
            f"{where or 'metrics text'} has shadow figures of several models or versions "
            f"({found}): name the one meant"
        )

    def mean(name: str) -> float | None:
        count = totals.get(f"{name}_count", 0.0)
        return totals.get(f"{name}_sum", 0.0) / count if count > 0 else None

    counts = [totals.get(name, 0.0) for name in _COUNTERS]
    abs_difference, latency = (mean(name) for name in _MEANS)
    figures = ShadowFigures(*counts, abs_difference, *_higher_lower(buckets), latency)
    if not series:
        return figures, target
    [(model_name, served_version, shadow_version)] = series
    found = replace(
        target,
        model_name=target.model_name or model_name,
        served_version=target.served_version or served_version,
        shadow_version=target.shadow_version or shadow_version,
    )
    return figures, found


def check_http_url(url: str, what: str) -> None:
    """Raise ValueError naming `what` unless `url` is an http(s) URL."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{what} {url!r} must start with http:// or https://")


def read_metrics_endpoint(url: str, *, timeout_s: float = 30.0) -> str:
    """The text of a predictor's `/metrics` page.

    Raises:
        ValueError: a URL that is not http(s).
        MetricsEndpointError: the page could not be read.
    """
    check_http_url(url, "metrics URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        raise MetricsEndpointError(f"{url} answered HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError):
            raise MetricsEndpointError(f"{url}: no answer within {timeout_s:g} s") from error
        raise MetricsEndpointError(f"cannot read {url}: {reason}") from error


def offline_figures(
    served_scores, shadow_scores, errors: float = 0, skipped: float = 0
) -> ShadowFigures:
    """The figures a predictor would count for these rows: `served_scores[i]` and
    `shadow_scores[i]` are the two models' scores of row i; `errors` and `skipped` are rows
    the shadow failed on or was not given, which have no shadow score.

    Raises:
        ValueError: the two arrays differ in length or are not one-dimensional.
    """
    served = np.asarray(served_scores, dtype=np.float64)
    shadow = np.asarray(shadow_scores, dtype=np.float64)
    if served.ndim != 1 or served.shape != shadow.shape:
        raise ValueError(
            f"served and shadow scores must be two 1-D arrays of one length, got shapes "
            f"{served.shape} and {shadow.shape}"
        )
    difference = shadow - served
    compared = len(served)
    disagreements = np.count_nonzero((served >= LABEL_THRESHOLD) != (shadow >= LABEL_THRESHOLD))
    return ShadowFigures(
        compared=float(compared),
        disagreements=float(disagreements),
        errors=float(errors),
        skipped=float(skipped),
        mean_abs_difference=float(np.abs(difference).mean()) if compared else None,
        scored_higher=float(np.count_nonzero(difference > AGREEMENT)),
        scored_lower=float(np.count_nonzero(difference <= -AGREEMENT)),
    )
