"""A small client for Prometheus's HTTP query API: instant and range queries, nothing else.

`GET /api/v1/query?query=…&time=…` and `GET /api/v1/query_range?query=…&start=…&end=…&step=…`
(https://prometheus.io/docs/prometheus/latest/querying/api/). Both answer
`{"status": "success", "data": {"resultType": …, "result": […]}}`, or on failure
`{"status": "error", "errorType": …, "error": …}` with a 4xx/5xx code. The standard library
is enough for that; PyPI's `prometheus-api-client` would add pandas, matplotlib and
dateparser to the image for the same two calls.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass


class PrometheusError(RuntimeError):
    """A query Prometheus did not answer with data: naming the query and Prometheus's error."""


@dataclass(frozen=True)
class Sample:
    """One series of a result: its labels and its (time, value) points (one for a vector)."""

    labels: dict[str, str]
    points: list[tuple[float, float]]

    @property
    def value(self) -> float:
        """The value of an instant-vector sample."""
        return self.points[-1][1]


class PrometheusClient:
    """Queries one Prometheus server, e.g. `PrometheusClient("http://prometheus:9090")`."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"Prometheus URL {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Evaluate `promql` at time `at` (Unix seconds; default now) as an instant vector.

        Raises:
            PrometheusError: unreachable, an error answer, or a result that is not a vector.
        """
        parameters = {"query": promql}
        if at is not None:
            parameters["time"] = f"{at:.3f}"
        return self._get("query", parameters, promql, "vector")

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Sample]:
        """Evaluate `promql` every `step_s` seconds from `start` to `end` (Unix seconds).

        Raises:
            PrometheusError: unreachable, an error answer, or a result that is not a matrix.
        """
        parameters = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step_s:g}",
        }
        return self._get("query_range", parameters, promql, "matrix")

    def _get(self, endpoint: str, parameters: dict[str, str], promql: str, kind: str):
        url = f"{self.url}/api/v1/{endpoint}?{urllib.parse.urlencode(parameters)}"
        where = f"Prometheus {self.url} query {promql!r}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
            message = _error_message(body) or f"HTTP {error.code} {error.reason}"
            raise PrometheusError(f"{where} failed: {message}") from error
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):  # accepted, then silent (or slow to connect)
                raise PrometheusError(f"{where}: no answer within {self.timeout_s:g} s") from error
            raise PrometheusError(f"{where}: cannot reach {self.url}: {reason}") from error
        try:
            answer = json.loads(body)
        except json.JSONDecodeError as error:
            raise PrometheusError(f"{where}: the answer is not JSON: {body[:200]!r}") from error
        if answer.get("status") != "success":
            raise PrometheusError(f"{where} failed: {_error_message(body)}")
        data = answer.get("data") or {}
        if data.get("resultType") != kind:
            raise PrometheusError(
                f"{where} returned a {data.get('resultType')!r}, expected a {kind!r}"
            )
        return [_sample(series, kind) for series in data.get("result") or []]


def _sample(series: dict, kind: str) -> Sample:
    raw = [series["value"]] if kind == "vector" else series["values"]
    return Sample(
        labels=dict(series.get("metric") or {}),
        # Values come as strings: "1.5", "NaN", "+Inf"; float() reads each of them.
        points=[(float(time), float(value)) for time, value in raw],
    )


def _error_message(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if not isinstance(answer, dict) or "error" not in answer:
        return ""
    return f"{answer.get('errorType', 'error')}: {answer['error']}"
