"""The shadow figures read from a predictor's /metrics equal an offline comparison of the rows.

The page is rendered by prometheus_client from the predictor's own metrics
(`ctloop.serving.metrics`), updated by its own counting (`ctloop.serving.shadow`); each test
labels its rows with a shadow version of its own, since those metrics live in the process-wide
registry.
"""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest

from ctloop.components.shadow.measurement import (
    AGREEMENT,
    LABEL_THRESHOLD,
    MetricsEndpointError,
    ShadowTarget,
    metrics_text_figures,
    offline_figures,
    read_metrics_endpoint,
)
from ctloop.pipelines.cli import main
from ctloop.serving import metrics, shadow


def scored_rows(rows: int, seed: int, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Served and shadow scores of the same rows (float32, as the models return them)."""
    rng = np.random.default_rng(seed)
    served = rng.beta(0.8, 2.0, rows).astype(np.float32)
    shadow_scores = np.clip(served + rng.normal(0.01, noise, rows), 0, 1).astype(np.float32)
    return served, shadow_scores


def counted(served, shadow_scores, *, errors=0, skipped=0, model="churn", served_version="2"):
    """Count the rows as the predictor does, in batches; return the shadow version used."""
    labels = (model, served_version, f"v-{uuid.uuid4().hex[:8]}")
    for part in np.array_split(np.arange(len(served)), 7):
        shadow.record_comparison(labels, served[part], shadow_scores[part])
    metrics.SHADOW_ERRORS.labels(*labels).inc(errors)
    metrics.SHADOW_ROWS_SKIPPED.labels(*labels).inc(skipped)
    return labels[2]


def page() -> str:
    return generate_latest(REGISTRY).decode()


def test_metrics_page_figures_equal_the_offline_comparison_of_the_same_rows():
    served, shadow_scores = scored_rows(5000, seed=1)
    version = counted(served, shadow_scores, errors=12, skipped=300)

    read, found = metrics_text_figures(page(), ShadowTarget("churn", version))
    offline = offline_figures(served, shadow_scores, errors=12, skipped=300)

    assert (read.compared, read.disagreements, read.errors, read.skipped) == (
        offline.compared,
        offline.disagreements,
        offline.errors,
        offline.skipped,
    )
    assert offline.disagreements > 0 and (offline.compared, offline.served) == (5000, 5312)
    assert read.mean_abs_difference == pytest.approx(offline.mean_abs_difference, rel=1e-9)
    assert (read.scored_higher, read.scored_lower) == (offline.scored_higher, offline.scored_lower)
    assert offline.scored_higher > offline.scored_lower > 0
    assert read.disagreement_rate == offline.disagreement_rate
    assert read.mean_latency_s is None  # nothing scored by a real shadow here
    assert found == ShadowTarget("churn", version, served_version="2")


def test_the_label_threshold_and_agreement_band_are_the_predictors():
    from ctloop.serving import predictor

    assert LABEL_THRESHOLD == shadow.LABEL_THRESHOLD == predictor.LABEL_THRESHOLD
    bounds = list(metrics.SCORE_DIFFERENCE_BUCKETS)
    around_zero = bounds[bounds.index(-AGREEMENT) : bounds.index(AGREEMENT) + 1]
    assert around_zero == [-AGREEMENT, AGREEMENT]


def test_a_page_with_several_shadows_needs_the_version_named():
    first = counted(*scored_rows(100, seed=2), model="ambiguous")
    second = counted(*scored_rows(50, seed=3), model="ambiguous")

    with pytest.raises(ValueError, match="several models or versions") as raised:
        metrics_text_figures(page(), ShadowTarget("ambiguous", ""), where="http://p/metrics")
    assert str(raised.value).startswith("http://p/metrics has shadow figures of several")
    assert f"shadow_version={first!r}" in str(raised.value)
    assert f"shadow_version={second!r}" in str(raised.value)
    figures, found = metrics_text_figures(page(), ShadowTarget("ambiguous", second))
    assert (figures.compared, found) == (50, ShadowTarget("ambiguous", second, "2"))


def test_a_page_that_is_not_prometheus_text_is_refused():
    with pytest.raises(ValueError, match="^http://p/metrics is not Prometheus text format: "):
        metrics_text_figures("<html>login</html>\n", ShadowTarget("", ""), where="http://p/metrics")


def test_offline_figures_need_two_arrays_of_one_length():
    with pytest.raises(ValueError, match=r"got shapes \(3,\) and \(2,\)"):
        offline_figures([0.1, 0.2, 0.3], [0.1, 0.2])
    empty = offline_figures([], [], errors=4)
    assert (empty.compared, empty.mean_abs_difference, empty.error_rate) == (0, None, 1.0)


# --- a predictor's page over HTTP, and the command line -------------------------------------


@pytest.fixture
def metrics_page():
    """Serves `state["text"]` at /metrics on loopback (404 elsewhere)."""
    state = {"text": ""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = state["text"].encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_cli_reads_a_predictors_metrics_page(metrics_page, tmp_path, capsys):
    served, shadow_scores = scored_rows(3000, seed=4, noise=0.01)
    version = counted(served, shadow_scores, model="laptop")
    metrics_page["text"] = page()
    report = tmp_path / "shadow.md"

    code = main(
        [
            "shadow-analysis",
            "--metrics-url",
            f"{metrics_page['url']}/metrics",
            "--model-name",
            "laptop",
            "--policy",
            json.dumps({"bake_time_s": 0}),
            "--report",
            str(report),
        ]
    )

    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    offline = offline_figures(served, shadow_scores)
    assert (summary["verdict"], summary["figures"]["compared"]) == ("go_on", 3000)
    assert summary["figures"]["disagreements"] == offline.disagreements
    text = report.read_text()
    assert f"Figures of shadow version {version} of model laptop against served version 2" in text
    assert f"read from {metrics_page['url']}/metrics" in text


def test_cli_names_a_metrics_page_that_cannot_be_read(metrics_page, capsys):
    argv = ["shadow-analysis", "--metrics-url", f"{metrics_page['url']}/nothing"]
    assert main([*argv, "--policy", '{"bake_time_s": 0}']) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert (
        line == f"ctloop shadow-analysis: {metrics_page['url']}/nothing answered HTTP 404 Not Found"
    )


def test_reading_an_unreachable_page_is_a_failing_environment():
    with pytest.raises(MetricsEndpointError, match="cannot read http://127.0.0.1:9/metrics"):
        read_metrics_endpoint("http://127.0.0.1:9/metrics", timeout_s=2)
