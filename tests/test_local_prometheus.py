"""The loopback Prometheus launcher: it scrapes the targets it is given, labelled, and stops
on exit; without the binary it says how to install it. Needs Debian's `prometheus` (skipped
otherwise, like the live canary test); a few seconds."""

import shutil
import time

import pytest
from pytest_httpserver import HTTPServer

from ctloop.components.canary.prometheus import PrometheusError
from ctloop.pipelines import local_prometheus
from ctloop.pipelines.local_prometheus import running_prometheus
from ctloop.serving.local_server import ServerStartError

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the prometheus binary is not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)",
)

METRICS = '# TYPE ctloop_predictions_total counter\nctloop_predictions_total{outcome="ok"} 7\n'


@pytest.fixture
def target():
    server = HTTPServer(host="127.0.0.1", port=0)
    server.expect_request("/metrics").respond_with_data(METRICS, content_type="text/plain")
    server.start()
    yield f"127.0.0.1:{server.port}"
    server.clear()
    server.stop()


def _await_series(prometheus, promql: str, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            samples = prometheus.query(promql)
        except PrometheusError:
            samples = []
        if samples:
            return samples
        time.sleep(0.2)
    raise AssertionError(f"no {promql} within {timeout_s} s: {prometheus.output_tail()}")


@needs_prometheus
def test_prometheus_scrapes_its_targets_every_second_with_their_labels(target, tmp_path):
    with running_prometheus([target], tmp_path, labels={"namespace": "demo"}) as prometheus:
        [sample] = _await_series(prometheus, "ctloop_predictions_total")
        process = prometheus.process
        scraped = prometheus.query("up")

    assert sample.value == 7
    assert sample.labels["namespace"] == "demo"
    assert sample.labels["instance"] == target
    assert [s.value for s in scraped] == [1]
    assert process.poll() is not None  # stopped on exit
    assert '"scrape_interval": "1s"' in (tmp_path / "prometheus.yml").read_text()


@needs_prometheus
def test_prometheus_that_exits_at_start_is_reported_with_its_output(tmp_path):
    # A storage path that is a file: Prometheus cannot open its store and exits.
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(ServerStartError, match="prometheus exited with code .*; its output:"):
        with running_prometheus(["127.0.0.1:1"], tmp_path):
            pass


def test_missing_binary_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(local_prometheus.shutil, "which", lambda _name: None)

    assert not local_prometheus.installed()
    with pytest.raises(ServerStartError, match="apt-get install prometheus"):
        with running_prometheus(["127.0.0.1:1"], tmp_path):
            pass
    assert not (tmp_path / "prometheus.yml").exists()
