"""Run a real Prometheus on loopback that scrapes local predictors: start, wait, stop.

Canary analysis reads only Prometheus (`ctloop.components.canary`), so showing it on a laptop
needs the real server, not a stand-in: `make demo` and the live canary test start Debian's
`prometheus` binary (`apt-get install prometheus`; `.ci/run` installs it) this way, with a
generated scrape configuration that lists the predictors' `host:port` targets and scrapes
them every second. The targets may start after Prometheus: it finds them as they come up.

Each target carries a `namespace` label, as Prometheus Operator labels a pod's series, so the
analysis selects series exactly as it would on a cluster. The store is a throwaway folder.
Starting, waiting and stopping are the predictor's (`ctloop.serving.local_server`): a deadline
on start-up, SIGTERM then SIGKILL on exit, and the output in a file a start-up failure quotes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ctloop.components.canary.prometheus import PrometheusClient
from ctloop.serving.local_server import LOOPBACK, ServerStartError, free_port, running_server

BINARY = "prometheus"
INSTALL_HINT = "apt-get install prometheus (Debian/Ubuntu; .ci/run installs it)"
READY_PATH = "/-/ready"
START_TIMEOUT_S = 30.0
_OUTPUT_TAIL_CHARS = 3000


class LocalPrometheus(PrometheusClient):
    """A query client for a Prometheus child process, which it also holds: `process` and
    `log` (its output file), for a caller that must tell a slow scrape from a dead server."""

    def __init__(self, url: str, process: subprocess.Popen, log: Path, timeout_s: float = 5.0):
        super().__init__(url, timeout_s=timeout_s)
        self.process = process
        self.log = log

    def output_tail(self) -> str:
        """The end of what the server has written so far."""
        text = self.log.read_text(errors="replace").strip() if self.log.exists() else ""
        return text[-_OUTPUT_TAIL_CHARS:] or "(it wrote nothing)"


def installed() -> bool:
    """Whether the `prometheus` binary is on PATH."""
    return shutil.which(BINARY) is not None


def scrape_config(
    targets: Sequence[str], labels: dict[str, str], scrape_interval_s: float = 1.0
) -> dict:
    """The configuration: one job scraping each `host:port` target's `/metrics`."""
    interval = f"{scrape_interval_s:g}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "ctloop",
                "static_configs": [{"targets": list(targets), "labels": dict(labels)}],
            }
        ],
    }


@contextmanager
def running_prometheus(
    targets: Sequence[str],
    root: Path,
    *,
    labels: dict[str, str] | None = None,
    scrape_interval_s: float = 1.0,
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[LocalPrometheus]:
    """Start Prometheus on a free loopback port scraping `targets`, with its configuration,
    store and output under `root`; yield it once `/-/ready` answers 200; stop it on exit.

    Raises:
        ServerStartError: the binary is missing, or the server exited or was not ready
            within `start_timeout_s` (the message quotes its output).
    """
    binary = shutil.which(BINARY)
    if binary is None:
        raise ServerStartError(f"the {BINARY} binary is not on PATH: {INSTALL_HINT}")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "prometheus.yml"
    # JSON is YAML: Prometheus reads it as it is.
    config.write_text(json.dumps(scrape_config(targets, labels or {}, scrape_interval_s)))
    port = free_port()
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address={LOOPBACK}:{port}",
    ]
    log = root / "prometheus.log"
    with running_server(
        command,
        port,
        start_timeout_s=start_timeout_s,
        output_path=log,
        ready_path=READY_PATH,
        what=BINARY,
    ) as server:
        yield LocalPrometheus(server.url, server.process, log)
