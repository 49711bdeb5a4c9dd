"""Canary analysis on live metrics: a real Prometheus scraping real ctloop predictors.

Four predictor processes serve the model name `churn`, each a version: the primary (1), a
healthy retrained canary (2), a canary trained with a feature the callers do not send yet
(3: every production request is rejected with a 400, the outcome a changed schema gives) and
a canary of 2000 trees of depth 12 instead of 30 of depth 3 (4: slow). Prometheus scrapes
them every second while a bounded load sends the same 250-row batches to each; then one
policy decides each canary against the primary from Prometheus alone.
"""

import contextlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from ctloop.components.canary.decision import observe_canary
from ctloop.components.canary.measurement import CanaryTarget
from ctloop.components.canary.policy import parse_canary_policy
from ctloop.components.canary.prometheus import PrometheusClient, PrometheusError
from ctloop.components.checks import Check
from ctloop.components.contract.model_input import to_frame
from ctloop.components.contract.profile import feature_schema
from ctloop.components.data.validation import validate_training_table
from ctloop.components.table_io import read_table
from ctloop.pipelines.local_prometheus import running_prometheus
from ctloop.serving.local_server import free_port, running_server, server_command
from tests.served_model import churn_profile

# Four model servers start at once (each imports kserve: seconds of CPU): on a busy
# two-CPU machine one can take longer than a single server would.
START_TIMEOUT_S = 180

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="the prometheus binary is not installed (Debian: apt-get install prometheus; "
    ".ci/run installs it)",
)

NAMESPACE = "ctloop-test"
REQUESTS = 120
BATCH_ROWS = 250
POLICY = parse_canary_policy(
    json.dumps(
        {
            "bake_time_s": 1,
            "step_s": 1,
            "min_requests": 100,
            "error_rate": {"max_increase": 0.02},
            # Relative, so it holds on a fast and a slow CPU alike: the slow canary takes
            # about ten times as long as the primary, a healthy one about as long.
            "latency_p99_ms": {"max_increase_relative": 2.0},
            "score_shift": {"psi_max": 0.2},
        }
    )
)
# (version, training rows, rounds, depth, extra feature)
MODELS = [
    ("1", slice(0, 5000), 30, 3, False),
    ("2", slice(2000, 7043), 30, 3, False),
    ("3", slice(0, 7043), 30, 3, True),
    ("4", slice(0, 1000), 2000, 12, False),
]


def _model_folder(folder: Path, table: pa.Table, version: str, rounds: int, depth: int) -> None:
    validated, profile = churn_profile(table)
    frame = to_frame(validated.table.select(validated.features), feature_schema(profile))
    labels = np.asarray(validated.table.column("churn").to_pylist())
    matrix = xgb.DMatrix(frame, labels, enable_categorical=True)
    # One thread: OpenMP threads spinning for a CPU that other processes hold make training
    # many times slower on a busy machine.
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.1, "nthread": 1}
    params["max_bin"] = 16
    xgb.train(params, matrix, rounds).save_model(folder / "model.json")
    (folder / "reference_profile.json").write_text(json.dumps(profile))
    (folder / "version.txt").write_text(version + "\n")


@pytest.fixture(scope="module")
def table(telco_churn_parquet) -> pa.Table:
    return read_table(str(telco_churn_parquet))


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {version: free_port() for version, *_rest in MODELS}


@pytest.fixture(scope="module")
def prometheus(ports, tmp_path_factory):
    """A Prometheus on loopback scraping each predictor's /metrics every second; started
    before the predictors, it finds them as they come up. Each target is labelled with a
    namespace, as Prometheus Operator labels a pod's series."""
    targets = [f"127.0.0.1:{port}" for port in ports.values()]
    root = tmp_path_factory.mktemp("prometheus")
    with running_prometheus(targets, root, labels={"namespace": NAMESPACE}) as server:
        yield server


@pytest.fixture(scope="module")
def predictors(prometheus, ports, tmp_path_factory, table):
    """{version: running predictor}; each model folder trained here."""
    root = tmp_path_factory.mktemp("canary_models")
    folders = {}
    for version, rows, rounds, depth, extra_feature in MODELS:
        part = table.slice(rows.start, rows.stop - rows.start)
        if extra_feature:
            support_calls = np.random.default_rng(7).integers(0, 5, part.num_rows)
            part = part.append_column("support_calls", pa.array(support_calls, pa.float64()))
        folders[version] = root / f"v{version}"
        folders[version].mkdir()
        _model_folder(folders[version], part, version, rounds, depth)

    def start(version: str):
        """Enter one server's context in a pool thread; the ExitStack below leaves it."""
        # One scoring thread each, as in pods with a CPU limit of 1: four predictors, the
        # load and Prometheus share this machine's CPUs, and a predictor scoring on all of
        # them would slow the others (the primary's p99 then rivals the slow canary's).
        command = server_command(
            folders[version], "churn", ports[version], extra_args=["--threads", "1"]
        )
        manager = running_server(
            command,
            ports[version],
            start_timeout_s=START_TIMEOUT_S,
            output_path=root / f"v{version}.log",
        )
        return manager, manager.__enter__()

    with ThreadPoolExecutor(len(folders)) as pool:
        started = list(pool.map(start, folders))
    with contextlib.ExitStack() as stack:
        for manager, _ in started:
            stack.push(manager)
        yield {version: server for version, (_, server) in zip(folders, started, strict=True)}


@pytest.fixture(scope="module")
def load(predictors, prometheus, table):
    """Send REQUESTS batches to each predictor; returns when the load began (Unix seconds).

    Callers send the production feature schema (the primary's), as lists in its order. The
    slow canary gets its own thread so the others' batches are not queued behind it.
    """
    validated = validate_training_table(table.slice(0, 7043), "churn")
    features = validated.table.select(validated.features)
    bodies = []
    for start in range(0, 2000, BATCH_ROWS):
        rows = features.slice(start, BATCH_ROWS).to_pylist()
        instances = [[row[name] for name in validated.features] for row in rows]
        bodies.append(json.dumps({"instances": instances}).encode())

    def send(versions: list[str], count: int) -> None:
        with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as http:
            for index in range(count):
                for version in versions:
                    url = f"{predictors[version].url}/v1/models/churn:predict"
                    http.post(url, content=bodies[index % len(bodies)])

    _await(prometheus, lambda: len(prometheus.query("up == 1")) == len(predictors), "targets up")
    # One request each first, scraped before the window opens: every series then exists
    # when the analysis window starts, as for a canary that has been up for a while.
    send(list(predictors), 1)
    _await_totals(prometheus, 1)
    started = time.time()
    groups = (["1", "2", "3"], ["4"])
    threads = [threading.Thread(target=send, args=(group, REQUESTS)) for group in groups]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _await_totals(prometheus, 1 + REQUESTS)
    # A few more scrapes of the settled counters: increase() extrapolates the change it sees to
    # the window's edges by how much of the window its samples cover, which over-counts a
    # burst by up to ~50 % when the last sample is the window's end.
    time.sleep(3)
    return started


def _await_totals(prometheus: PrometheusClient, count: int) -> None:
    """Until Prometheus's last scrape holds `count` requests of each of the four versions."""

    def seen() -> bool:
        totals = prometheus.query("sum by (model_version) (ctloop_predictions_total)")
        return len(totals) == len(MODELS) and all(sample.value == count for sample in totals)

    _await(prometheus, seen, f"{count} requests of each version")


def _await(prometheus: PrometheusClient, condition, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if prometheus.process.poll() is not None:
            break
        try:
            if condition():
                return
        except PrometheusError:  # not ready yet
            pass
        time.sleep(0.2)
    log = prometheus.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"Prometheus never saw {what} within {timeout_s} s: {log}")


def decide(prometheus, load, version: str):
    target = CanaryTarget("churn", canary_version=version, primary_version="1", namespace=NAMESPACE)
    return observe_canary(prometheus, POLICY, target, started_at=load - 1)


def checks(decision) -> dict[str, Check]:
    return {check.kind: check for check in decision.checks}


def test_healthy_canary_is_promoted_from_live_metrics(prometheus, load):
    decision = decide(prometheus, load, "2")

    assert decision.verdict == "promote", decision.reasons
    # increase() extrapolates the rate to the window's edges, which over-counts a burst that
    # fills a few seconds of a short window: near, not exactly, the count sent.
    assert decision.canary.requests == pytest.approx(REQUESTS, rel=0.3)
    assert decision.canary.error_rate == decision.primary.error_rate == 0
    assert 0 < decision.canary.p99_ms <= 3 * decision.primary.p99_ms
    assert decision.canary.score_counts.sum() == pytest.approx(REQUESTS * BATCH_ROWS, rel=0.3)
    # The timeline (range queries of the raw counters) counts requests exactly, from the
    # first whole interval on: the warm-up request and a few of the first may fall before.
    counted = sum(row.get("canary_requests", 0) for row in decision.timeline)
    assert 0.8 * REQUESTS <= counted <= REQUESTS + 1


def test_canary_rejecting_the_production_schema_is_rolled_back(prometheus, load):
    decision = decide(prometheus, load, "3")

    assert decision.verdict == "rollback"
    error_rate = checks(decision)["error_rate"]
    assert not error_rate.passed and error_rate.value == 1.0
    assert decision.reasons[0].startswith("error_rate 1 > primary's + 0.02")
    assert decision.canary.p99_ms is None  # nothing succeeded to be timed
    assert sum(row.get("canary_failed", 0) for row in decision.timeline) >= 0.8 * REQUESTS


def test_slow_canary_is_rolled_back_on_its_p99_latency(prometheus, load):
    decision = decide(prometheus, load, "4")

    assert decision.verdict == "rollback"
    latency = checks(decision)["latency_p99_ms"]
    assert not latency.passed and latency.value > 3 * decision.primary.p99_ms, decision.checks
    assert latency.rule in decision.reasons


def test_series_of_another_namespace_are_not_read(prometheus, load):
    target = CanaryTarget("churn", canary_version="2", primary_version="1", namespace="other")
    decision = observe_canary(prometheus, POLICY, target, started_at=load - 1)

    assert decision.canary.requests == decision.primary.requests == 0
