"""Throughput and latency of the ctloop predictor against stock KServe and MLflow serving.

Run: `.venv/bin/python tests/benchmarks/bench_serving.py [--seconds 10] [--probe-seconds 5]`.
Needs `wrk` (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`).

Trains one synthetic model (30 numeric features, 200 trees of depth 6, binary:logistic, on
random rows with a planted logistic label) and saves it twice in a temporary folder: as a
ctloop model folder (`model.json` + `reference_profile.json`) and, as the training step logs
it (`log_model_with_profile`: signature and 5-row input example), as an MLflow model in a
SQLite tracking store (MLflow 3.17 refuses a file store unless told to). With the signature,
MLflow's scoring server checks every request against it, as it does for the models the
pipeline registers. The servers then take turns on loopback, each one process with
one worker, started and stopped by this script:

- ctloop:  `python -m ctloop.serving.server` (v1 predict answered by `V1PredictRoute` in front
  of KServe's app, on uvloop; a batch of up to 100 rows is scored on the event loop while no
  other batch is in a worker thread, any other batch in a worker thread);
- kserve:  tests/benchmarks/stock_kserve_model.py, a minimal `kserve.Model` whose `predict`
  calls `booster.inplace_predict(np.asarray(payload["instances"]))` with default settings, on
  the event loop, in `kserve.ModelServer(http_port=P, enable_grpc=False)`;
- kserve-1t: the same with OMP_NUM_THREADS=1, for reference. XGBoost's default thread count
  (every CPU) starts an OpenMP team on each call, which waits whenever one of those CPUs is
  busy (with wrk, or anything else): on a shared machine that, not KServe, dominates the stock
  model's figures. ctloop scores batches of up to 1,000 rows on one thread;
- mlflow:  `mlflow models serve -m <model uri> --env-manager local` (one uvicorn worker by
  default), sent `{"dataframe_split": {"columns": [...], "data": [[...], ...]}}`, the
  cheapest JSON body its scoring server (MLflow 3.17) accepts for this model:
  `{"inputs": [[...]]}` becomes a bare numpy array, whose DMatrix has no feature names, and
  the xgboost flavour's `validate_features` rejects it (HTTP 400); `dataframe_records` builds
  the same frame from one object per row.

Each cell is one `wrk` run of `--seconds` (a Lua script POSTs a fixed body and reports from
its `done` hook) on the same rows: v1 JSON at batch 1 and 100 rows, at concurrency 1
(`wrk -t1 -c1`) and 8 (`wrk -t2 -c8`). Columns: requests/s, rows/s, p50 and p99 latency as
wrk sees it, non-2xx answers, socket errors and timeouts, and the server's CPU time (user +
system, its child processes included) per request, which a busy machine distorts less than
latency. All servers are started first; each cell then runs against them one after the other.
Every server runs with its defaults: ctloop writes no per-request log lines (unless
`--request-logs`), stock KServe and MLflow's uvicorn write theirs. The in-process floor is
`booster.inplace_predict` on a float32 matrix of the same rows (timeit, median of repeats,
measured before the servers start and after they stop, the faster kept), with one thread and
with XGBoost's default; the overhead column is p50 at concurrency 1 less the faster floor.
Before timing, every server's scores of the 100-row batch are checked against in-process ones.

Health under load: while `wrk -t1 -c1` POSTs 10,000-row batches to ctloop (then to stock
KServe), this process GETs `/v2/health/ready` every 10 ms and reports the p99 and max probe
latency: ctloop scores large batches in a worker thread, stock KServe's `predict` blocks the
event loop.

wrk and the servers share this machine's CPUs, so concurrency 8 measures the server with a
load generator beside it; the CPU count and load average are printed. Goals, printed beside
the figures: ctloop >= 1.5x stock KServe's requests/s at batch 1 and >= 1.3x at batch 100,
>= 10x MLflow's, p50 overhead over in-process predict <= 0.5 ms at concurrency 1, zero errors,
and health probes answered within 100 ms while 10,000-row batches are scored; the ratio to
kserve-1t is printed beside them. Nothing here is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

FEATURES = [f"x{i:02d}" for i in range(30)]
TARGET = "label"
TRAIN_ROWS = 10_000
TREES = 200
DEPTH = 6
BATCHES = (1, 100)
CONCURRENCY = {1: (1, 1), 8: (2, 8)}
"""Concurrency -> (wrk threads, wrk connections)."""
PROBE_BATCH = 10_000
PROBED = ("ctloop", "kserve")
"""Servers whose health probes are timed while they score PROBE_BATCH-row batches."""
PROBE_EVERY_S = 0.01
NAME = "synthetic"
HERE = Path(__file__).resolve().parent
WRK_SCRIPT = """
local body_file = assert(io.open({body_path}, "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT %d %d %d %d %d %d %d %d %d %d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""


@dataclass(frozen=True)
class Peer:
    """A server to start: its command, the URL to POST to, and how to wrap the rows."""

    name: str
    command: list[str]
    port: int
    predict_path: str
    body: Callable[[list[list[float]]], dict]
    ready_path: str
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    errors: int
    server_cpu_s: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def train_model(
    folder: Path, eta: float = 0.1, version: str | None = None
) -> tuple[object, dict, object, list[list[float]]]:
    """Train the synthetic booster and save the ctloop model folder (with `version.txt` when a
    version is given); return the booster, its profile, the 5-row input example the training
    step logs with it, and request rows. Another `eta` gives another model of the same rows."""
    import numpy as np
    import pyarrow as pa
    import xgboost as xgb

    from ctloop.components.contract.model_input import to_frame
    from ctloop.components.contract.profile import feature_schema
    from ctloop.components.data.profile import reference_profile

    rng = np.random.default_rng(7)
    x = rng.normal(size=(TRAIN_ROWS, len(FEATURES))).astype(np.float32)
    weights = rng.normal(scale=0.5, size=len(FEATURES))
    logit = x @ weights + 0.3 * np.sin(3 * x[:, 0]) * x[:, 1]
    label = (rng.random(TRAIN_ROWS) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    matrix = xgb.DMatrix(x, label=label, feature_names=FEATURES)
    # One training thread: OpenMP threads that spin on a busy machine slow training 10x+.
    params = {"objective": "binary:logistic", "max_depth": DEPTH, "eta": eta, "nthread": 1}
    booster = xgb.train(params, matrix, num_boost_round=TREES)
    folder.mkdir(parents=True)
    booster.save_model(folder / "model.json")
    if version is not None:
        (folder / "version.txt").write_text(f"{version}\n")
    table = pa.table({**{name: x[:, i] for i, name in enumerate(FEATURES)}, TARGET: label})
    profile = reference_profile(table, TARGET, "binary", FEATURES, [], None)
    (folder / "reference_profile.json").write_text(json.dumps(profile))
    example = to_frame(table.slice(0, 5), feature_schema(profile))
    request_rows = np.round(rng.normal(size=(PROBE_BATCH, len(FEATURES))), 4).tolist()
    return booster, profile, example, request_rows


def log_mlflow_model(
    booster: object, profile: dict, example: object, store: Path
) -> tuple[str, dict[str, str]]:
    """Log the booster as the training step does (`log_model_with_profile`: signature, input
    example, profile) in a temporary store (SQLite, artifacts on disk); return its URI and the
    environment that resolves it."""
    import mlflow

    from ctloop.components.registry.mlflow_registry import log_model_with_profile

    store.mkdir(parents=True)
    tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment(
        "bench-serving", artifact_location=(store / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment):
        model_uri = log_model_with_profile(booster, profile, example)
    return model_uri, {"MLFLOW_TRACKING_URI": tracking_uri}


def inprocess_floor(model_file: Path, rows: list[list[float]], batch: int) -> dict[str, float]:
    """Median seconds per `inplace_predict` call at `batch` rows: one thread and default."""
    import numpy as np
    import xgboost as xgb

    matrix = np.asarray(rows[:batch], dtype=np.float32)
    floors = {}
    for label, nthread in (("nthread=1", 1), ("default", None)):
        handle = xgb.Booster(model_file=str(model_file))
        if nthread:
            handle.set_param({"nthread": nthread})
        timer = timeit.Timer(lambda h=handle: h.inplace_predict(matrix))
        number, _ = timer.autorange()  # calls that take >= 0.2 s
        floors[label] = statistics.median(timer.repeat(repeat=7, number=number)) / number
    return floors


def peers(folder: Path, model_uri: str, mlflow_env: dict[str, str]) -> list[Peer]:
    from ctloop.serving.local_server import LOOPBACK, free_port, server_command

    ctloop_port, stock_port, one_thread_port, mlflow_port = (free_port() for _ in range(4))
    bin_dir = str(Path(sys.executable).parent)  # mlflow runs `uvicorn` from PATH
    env = {**os.environ, **mlflow_env, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    mlflow_serve = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    mlflow_serve += ["--env-manager", "local", "-h", LOOPBACK, "-p", str(mlflow_port)]
    stock = [sys.executable, str(HERE / "stock_kserve_model.py"), str(folder / "model.json")]
    v1 = f"/v1/models/{NAME}:predict"
    return [
        Peer(
            "ctloop",
            server_command(folder, NAME, ctloop_port),
            ctloop_port,
            v1,
            v1_body,
            "/v2/health/ready",
        ),
        Peer(
            "kserve",
            [*stock, str(stock_port), NAME],
            stock_port,
            v1,
            v1_body,
            "/v2/health/ready",
        ),
        Peer(
            "kserve-1t",
            [*stock, str(one_thread_port), NAME],
            one_thread_port,
            v1,
            v1_body,
            "/v2/health/ready",
            {**os.environ, "OMP_NUM_THREADS": "1"},
        ),
        Peer("mlflow", mlflow_serve, mlflow_port, "/invocations", mlflow_body, "/ping", env),
    ]


def v1_body(rows: list[list[float]]) -> dict:
    return {"instances": rows}


def mlflow_body(rows: list[list[float]]) -> dict:
    return {"dataframe_split": {"columns": FEATURES, "data": rows}}


@contextmanager
def running(peer: Peer, log: Path, timeout_s: float = 180.0) -> Iterator[tuple[str, int]]:
    """Start `peer`, yield its base URL and process id once its ready path answers 200, stop
    it after."""
    import httpx

    from ctloop.serving.local_server import LOOPBACK, stop

    url = f"http://{LOOPBACK}:{peer.port}"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            peer.command, stdout=sink, stderr=subprocess.STDOUT, env=peer.env
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{peer.name} exited: {log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(url + peer.ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{peer.name} not ready after {timeout_s:g} s")
            time.sleep(0.2)
        yield url, process.pid
    finally:
        stop(process)


def write_body(folder: Path, peer: Peer, rows: list[list[float]], batch: int) -> Path:
    path = folder / f"{peer.name}-{batch}.json"
    if not path.exists():
        path.write_text(json.dumps(peer.body(rows[:batch])))
    return path


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU of a server process and its children (mlflow starts uvicorn)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def run_wrk(
    url: str,
    body: Path,
    threads: int,
    connections: int,
    seconds: float,
    scratch: Path,
    server_pid: int | None = None,
    script_text: str = WRK_SCRIPT,
) -> WrkResult:
    script = scratch / f"{body.stem}.lua"
    script.write_text(script_text.format(body_path=json.dumps(str(body))))
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    command += ["--timeout", "10s", "-s", str(script), url]
    cpu_before = server_cpu_seconds(server_pid) if server_pid else 0.0
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    cpu = server_cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    line = next(
        (text for text in completed.stdout.splitlines() if text.startswith("WRK_RESULT ")), None
    )
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed:\n{completed.stdout}\n{completed.stderr}")
    requests, duration, p50, p99, peak, status, *socket_errors = map(int, line.split()[1:])
    return WrkResult(
        requests=requests,
        seconds=duration / 1e6,
        p50_ms=p50 / 1e3,
        p99_ms=p99 / 1e3,
        max_ms=peak / 1e3,
        non_2xx=status,
        errors=sum(socket_errors),
        server_cpu_s=cpu,
    )


def check_scores(url: str, peer: Peer, body: Path, expected: list[float]) -> str:
    """Compare the server's scores of a body with the in-process ones (printed, not asserted)."""
    import httpx
    import numpy as np

    answer = httpx.post(
        url + peer.predict_path,
        content=body.read_bytes(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    if answer.status_code != 200:
        return f"HTTP {answer.status_code}: {answer.text[:200]}"
    scores = np.asarray(answer.json()["predictions"], dtype=np.float64).reshape(-1)
    gap = float(np.max(np.abs(scores - np.asarray(expected))))
    return f"scores match in-process (max |diff| {gap:.1e})" if gap < 1e-5 else f"diff {gap}"


def probe_under_load(
    url: str, endpoint: str, body: Path, seconds: float, scratch: Path
) -> tuple[list[float], int, WrkResult]:
    """Probe `url`'s `/v2/health/ready` every PROBE_EVERY_S while wrk posts `body` to
    `endpoint` on one connection."""
    import httpx

    outcome: dict[str, WrkResult] = {}
    load = threading.Thread(
        target=lambda: outcome.setdefault("wrk", run_wrk(endpoint, body, 1, 1, seconds, scratch))
    )
    latencies, failures = [], 0
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/v2/health/ready")  # open the keep-alive connection first
        load.start()
        time.sleep(0.3)  # let the first batch arrive
        while load.is_alive():
            started = time.perf_counter()
            try:
                ok = client.get("/v2/health/ready").status_code == 200
            except httpx.TransportError:
                ok = False
            latencies.append(time.perf_counter() - started)
            failures += not ok
            time.sleep(PROBE_EVERY_S)
    load.join()
    return latencies, failures, outcome["wrk"]


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="wrk duration of each cell")
    parser.add_argument("--probe-seconds", type=float, default=5, help="health-under-load run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(
            "bench_serving needs the wrk load generator: `apt-get install -y wrk` "
            "(Debian/Ubuntu) or `brew install wrk` (macOS)",
            file=sys.stderr,
        )
        sys.exit(2)

    import numpy as np

    with tempfile.TemporaryDirectory(prefix="ctloop-bench-serving-") as tmp:
        scratch = Path(tmp)
        started = time.perf_counter()
        booster, profile, example, rows = train_model(scratch / "model")
        trained_s = time.perf_counter() - started
        model_uri, mlflow_env = log_mlflow_model(booster, profile, example, scratch / "mlruns")
        serial = booster.copy()
        serial.set_param({"nthread": 1})
        expected = serial.inplace_predict(np.asarray(rows[:100], dtype=np.float32)).tolist()
        model_file = scratch / "model" / "model.json"
        floors = {batch: inprocess_floor(model_file, rows, batch) for batch in BATCHES}
        print(
            f"model: {len(FEATURES)} numeric features, {TREES} trees of depth {DEPTH}, "
            f"trained on {TRAIN_ROWS} rows in {trained_s:.1f} s; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
            f"{args.seconds:g} s per cell"
        )
        results: dict[tuple[str, int, int], WrkResult] = {}
        probes: dict[str, tuple[list[float], int, WrkResult]] = {}
        with ExitStack() as servers:
            started_peers = []
            for peer in peers(scratch / "model", model_uri, mlflow_env):
                url, pid = servers.enter_context(running(peer, scratch / f"{peer.name}.log"))
                bodies = {batch: write_body(scratch, peer, rows, batch) for batch in BATCHES}
                print(f"{peer.name}: {check_scores(url, peer, bodies[100], expected)}")
                run_wrk(url + peer.predict_path, bodies[1], 1, 1, 1, scratch)  # warm-up
                started_peers.append((peer, url, pid, bodies))
            # Cell by cell, the servers one after the other (the others idle), so that a change
            # in the machine's load over the run shifts every server's figures alike.
            for batch in BATCHES:
                for concurrency, (threads, connections) in CONCURRENCY.items():
                    for peer, url, pid, bodies in started_peers:
                        results[peer.name, batch, concurrency] = run_wrk(
                            url + peer.predict_path,
                            bodies[batch],
                            threads,
                            connections,
                            args.seconds,
                            scratch,
                            pid,
                        )
            for peer, url, _, _ in started_peers:
                if peer.name in PROBED:
                    large = write_body(scratch, peer, rows, PROBE_BATCH)
                    probes[peer.name] = probe_under_load(
                        url, url + peer.predict_path, large, args.probe_seconds, scratch
                    )
        for batch in BATCHES:  # again, with the servers stopped: the faster figure counts
            again = inprocess_floor(model_file, rows, batch)
            floors[batch] = {label: min(t, again[label]) for label, t in floors[batch].items()}
    report(results, floors, probes)


def _table_order(item: tuple[tuple[str, int, int], WrkResult]) -> tuple[int, int, int]:
    (name, batch, concurrency), _ = item
    order = ["ctloop", "kserve", "kserve-1t", "mlflow"]
    return order.index(name) if name in order else len(order), batch, concurrency


def report(
    results: dict[tuple[str, int, int], WrkResult],
    floors: dict[int, dict[str, float]],
    probes: dict[str, tuple[list[float], int, WrkResult]],
) -> None:
    print()
    print(
        f"{'server':<10}{'batch':>6}{'conc':>5}{'req/s':>9}{'rows/s':>10}{'p50 ms':>9}"
        f"{'p99 ms':>9}{'non-2xx':>8}{'errors':>7}{'p50-floor ms':>14}{'CPU ms/req':>12}"
    )
    for (name, batch, concurrency), row in sorted(results.items(), key=_table_order):
        overhead = ""
        if concurrency == 1:
            overhead = f"{row.p50_ms - min(floors[batch].values()) * 1e3:.3f}"
        print(
            f"{name:<10}{batch:>6}{concurrency:>5}{row.per_second:>9.0f}"
            f"{row.per_second * batch:>10.0f}{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}"
            f"{row.non_2xx:>8}{row.errors:>7}{overhead:>14}"
            f"{row.server_cpu_s * 1e3 / max(row.requests, 1):>12.2f}"
        )
    for batch, floor in floors.items():
        figures = ", ".join(f"{label} {seconds * 1e3:.3f} ms" for label, seconds in floor.items())
        print(f"in-process inplace_predict at batch {batch}: {figures} per call")
    concurrency_note = ", ".join(f"conc {c} = wrk -t{t} -c{n}" for c, (t, n) in CONCURRENCY.items())
    print(
        f"({concurrency_note}; p50-floor: p50 less the faster in-process time; CPU ms/req: "
        "the server's user + system CPU per request, which a busy machine inflates less than "
        "latency)"
    )

    print()
    for name, (latencies, failures, load) in probes.items():
        print(
            f"{name}: /v2/health/ready under {PROBE_BATCH}-row batches "
            f"({load.per_second:.1f} batches/s, batch p50 {load.p50_ms:.0f} ms): "
            f"{len(latencies)} probes, p99 {percentile(latencies, 0.99) * 1e3:.1f} ms, "
            f"max {max(latencies) * 1e3:.1f} ms, {failures} failed"
        )

    print()
    print("goals (not asserted):")
    for batch, goal in ((1, 1.5), (100, 1.3)):
        for concurrency in CONCURRENCY:
            ours = results["ctloop", batch, concurrency].per_second
            stock = results["kserve", batch, concurrency].per_second
            mlflow = results["mlflow", batch, concurrency].per_second
            one_thread = results["kserve-1t", batch, concurrency].per_second
            print(
                f"  batch {batch:>3} conc {concurrency}: ctloop / kserve "
                f"{ours / stock:.2f}x (goal >= {goal}x), ctloop / mlflow "
                f"{ours / mlflow:.1f}x (goal >= 10x); ctloop / kserve-1t {ours / one_thread:.2f}x"
            )
    for batch in BATCHES:
        overhead = results["ctloop", batch, 1].p50_ms - min(floors[batch].values()) * 1e3
        print(f"  ctloop p50 overhead at batch {batch}, conc 1: {overhead:.3f} ms (goal <= 0.5)")
    failed = sum(row.non_2xx + row.errors for key, row in results.items() if key[0] == "ctloop")
    print(f"  ctloop non-2xx + errors: {failed} (goal 0)")
    if "ctloop" in probes:
        worst = max(probes["ctloop"][0]) * 1e3
        print(f"  ctloop max probe latency under load: {worst:.1f} ms (goal <= 100)")


if __name__ == "__main__":
    main()
