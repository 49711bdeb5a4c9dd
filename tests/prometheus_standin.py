"""A Prometheus HTTP API stand-in on 127.0.0.1, answering canary analysis's queries.

`CannedPrometheus` answers `/api/v1/query` and `/api/v1/query_range` the way Prometheus
answers the analysis's queries for the predictor's metrics: each version has per-second rates
(requests by outcome, scored rows by score bucket) and a p99 latency, so an
`increase(...[W])` is rate x W, and a raw counter at time t is rate x (t - NOW + 1 h), the
process having started an hour before `NOW`. The real `PrometheusClient` talks HTTP to it,
so the tests cover the client's requests and parsing as well as the decisions.
"""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

BUCKETS = [f"{0.05 * step:.2f}" for step in range(1, 21)] + ["+Inf"]
# Score shares over the 21 buckets: a churn model's scores, mostly low.
SHARES = np.array([30, 14, 9, 7, 6, 5, 4, 4, 3, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0], float)
NOW = 1_700_000_000.0


def version_figures(ok=10.0, invalid=0.0, error=0.0, p99_s=0.008, shares=SHARES, rows=50):
    """Per-second rates of one version: requests by outcome, rows scored by bucket."""
    return {
        "outcomes": {"ok": ok, "invalid": invalid, "error": error},
        "p99_s": p99_s if ok > 0 else None,
        "score_rows": np.asarray(shares, float) / np.sum(shares) * ok * rows,
    }


class CannedPrometheus:
    """Prometheus's HTTP API on loopback, answering from `figures[version]`."""

    def __init__(self, figures: dict[str, dict]):
        self.figures = figures
        self.queries: list[dict[str, str]] = []
        self.fail_with: tuple[int, dict] | None = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                params = {key: values[0] for key, values in parse_qs(url.query).items()}
                standin.queries.append({"path": url.path, **params})
                code, body = standin.answer(url.path, params)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve = {"target": self._server.serve_forever, "kwargs": {"poll_interval": 0.02}}
        threading.Thread(**serve, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self):
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        if self.fail_with is not None:
            return self.fail_with
        query = params["query"]
        version = re.search(r'model_version="([^"]*)"', query)[1]
        figures = self.figures.get(version)
        if path.endswith("/query_range"):
            # Raw counters: requests since the process started, an hour before NOW.
            start, end, step = (float(params[key]) for key in ("start", "end", "step"))
            times = [start + k * step for k in range(round((end - start) / step) + 1)]
            result = [
                {"metric": labels, "values": [[t, str(rate * (t - NOW + 3600))] for t in times]}
                for labels, rate in self._series(query, figures, 1.0)
            ]
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}
        window_s = int(re.search(r"\[(\d+)ms\]", query)[1]) / 1000
        at = float(params.get("time", NOW))
        result = [
            {"metric": labels, "value": [at, str(value)]}
            for labels, value in self._series(query, figures, window_s)
        ]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}

    @staticmethod
    def _series(query: str, figures: dict | None, window_s: float) -> list[tuple[dict, float]]:
        if figures is None:
            return []
        if "ctloop_predictions_total" in query:  # increase(), or a counter's rate
            return [
                ({"outcome": outcome}, rate * window_s)
                for outcome, rate in figures["outcomes"].items()
                if rate > 0
            ]
        if "histogram_quantile" in query:
            # Prometheus answers NaN for a histogram with no observations in the window.
            p99 = figures["p99_s"]
            return [({}, "NaN" if p99 is None else p99)]
        if "ctloop_prediction_score_bucket" in query:
            cumulative = np.cumsum(figures["score_rows"]) * window_s
            return [({"le": le}, count) for le, count in zip(BUCKETS, cumulative, strict=True)]
        raise AssertionError(f"unexpected query {query}")
