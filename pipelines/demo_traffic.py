"""Production traffic for the demo's rollout: predictors on loopback and a window replayed.

The rollout stages (`demo_rollout`) need several predictors up at once, and callers sending
them what production would: rows of a production window, in batches, as v1 requests of
feature-keyed objects, once (the shadow stage) or over and over until the analysis decides (the
canary stages). Predictors start in parallel (each imports KServe: seconds of CPU) and each is
stopped by the caller's ExitStack, also when another failed to start. Before a canary is
watched, `warm_up` sends each version one request and waits until Prometheus has scraped it,
so every series the analysis reads exists when its window opens.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow.parquet as pq

from ctloop.components.canary.measurement import TOTALS_QUERY, CanaryTarget, selector
from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.components.contract.model_folder import PROFILE_FILE
from ctloop.serving.local_server import running_server, server_command

BATCH_ROWS = 25
REQUESTS_PER_S = 30.0
SETTLE_TIMEOUT_S = 60.0
START_TIMEOUT_S = 180.0
"""Several predictors start at once, each importing KServe (seconds of CPU): on a busy
two-CPU laptop one can take minutes."""
JSON_HEADERS = {"Content-Type": "application/json"}
ANSWER_CHARS = 90
"""How much of a failing canary's answer `warm_up` returns."""


def replay_bodies(window: Path, model_dir: Path) -> tuple[list[bytes], int]:
    """The window's rows that have every feature of the model in `model_dir`, as v1 request
    bodies of BATCH_ROWS rows (feature-keyed objects); and the number of rows."""
    features = json.loads((model_dir / PROFILE_FILE).read_text())["feature_order"]
    rows = [
        row
        for row in pq.read_table(window, columns=features).to_pylist()
        if all(value is not None for value in row.values())
    ]
    bodies = [
        json.dumps({"instances": rows[start : start + BATCH_ROWS]}).encode()
        for start in range(0, len(rows), BATCH_ROWS)
    ]
    return bodies, len(rows)


def send_all(url: str, bodies: Sequence[bytes]) -> None:
    """POST each body once, in turn.

    Raises:
        RuntimeError: a request was not answered with 200 (quoting the answer).
    """
    with httpx.Client(timeout=30, headers=JSON_HEADERS) as client:
        for body in bodies:
            answer = client.post(url, content=body)
            if answer.status_code != 200:
                raise RuntimeError(f"POST {url}: HTTP {answer.status_code}: {answer.text[:500]}")


def send_until(url: str, bodies: Sequence[bytes], done: threading.Event) -> None:
    """POST the bodies in turn, over and over, about REQUESTS_PER_S a second until `done` is
    set; any answer is accepted (the analysis reads each version's failures from its
    metrics)."""
    with httpx.Client(timeout=30, headers=JSON_HEADERS) as client:
        sent = 0
        while not done.wait(1.0 / REQUESTS_PER_S):
            client.post(url, content=bodies[sent % len(bodies)])
            sent += 1


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = SETTLE_TIMEOUT_S):
    """Poll `condition` until it holds.

    Raises:
        RuntimeError: it did not hold within `timeout_s`, naming `what` was awaited.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise RuntimeError(f"waited {timeout_s:g} s for {what}")
        time.sleep(0.25)


def start_servers(
    stack: ExitStack,
    commands: dict[str, tuple[list[str], int]],
    logs: Path,
    log_prefix: str = "",
) -> dict[str, str]:
    """Start each server `{key: (command, port)}` in parallel, its output in
    `logs/<log_prefix><key>.log`; each is stopped when `stack` closes. Returns {key: URL}.

    Raises:
        ServerStartError: a server did not start (the others are still stopped with `stack`).
    """

    def start(key: str):
        command, port = commands[key]
        log = logs / f"{log_prefix}{key}.log"
        manager = running_server(command, port, start_timeout_s=START_TIMEOUT_S, output_path=log)
        return manager, manager.__enter__()

    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {key: pool.submit(start, key) for key in commands}
    urls, failure = {}, None
    for key, future in futures.items():
        try:
            manager, server = future.result()
        except Exception as error:  # noqa: BLE001 - raised below, once the others are owned
            failure = failure or error
            continue
        stack.push(manager)
        urls[key] = server.url
    if failure is not None:
        raise failure
    return urls


@dataclass(frozen=True)
class Predictor:
    """One ctloop predictor to start: the model folder it serves, under which name and
    version, on which loopback port."""

    model_dir: Path
    name: str
    version: str
    port: int


def start_predictors(stack: ExitStack, predictors: list[Predictor], logs: Path) -> dict[str, str]:
    """Start each predictor (`logs/predictor-v<version>.log`), stopped when `stack` closes;
    {version: URL}. One scoring thread each, as in a pod with a CPU limit of 1: the demo's
    predictors share this machine's CPUs with each other, Prometheus and the replay."""
    commands = {
        predictor.version: (
            server_command(
                predictor.model_dir,
                predictor.name,
                predictor.port,
                predictor.version,
                ["--threads", "1"],
            ),
            predictor.port,
        )
        for predictor in predictors
    }
    return start_servers(stack, commands, logs, log_prefix="predictor-v")


def warm_up(
    prometheus: PrometheusClient, target: CanaryTarget, urls: list[str], body: bytes
) -> str | None:
    """One request to each predictor (primary, canary), scraped before the analysis window
    opens: every series then exists when it starts, as for versions that have served a while.
    Returns the canary's answer when it is not a success ("HTTP 400: ..."), else None."""
    with httpx.Client(timeout=30, headers=JSON_HEADERS) as client:
        answers = [client.post(url, content=body) for url in urls]
    for version in (target.primary_version, target.canary_version):
        wait_for(
            lambda version=version: bool(
                prometheus.query(TOTALS_QUERY % selector(target, version))
            ),
            f"Prometheus scraping version {version}",
        )
    canary = answers[-1]
    if canary.status_code == 200:
        return None
    try:  # ctloop's predictor answers {"error": "...; ..."}: its first clause says what
        error = str(canary.json()["error"]).split("; ")[0]
    except (ValueError, KeyError, TypeError):
        error = canary.text
    return f"HTTP {canary.status_code}: {error[:ANSWER_CHARS]}"
