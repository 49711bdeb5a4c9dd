"""Run the ctloop predictor as a child process on loopback: start, wait until ready, stop.

`make demo` serves the champion this way, and the tests start `ctloop serve` through the
same code. Nothing here waits forever: start-up has a deadline, every probe a timeout, and
stopping escalates from SIGTERM to SIGKILL. The server's output goes to a file (a pipe that
nobody reads would stall it once full) and is quoted in the error when it does not start.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
READY_PATH = "/v2/health/ready"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
_OUTPUT_TAIL_CHARS = 4000


class ServerStartError(RuntimeError):
    """The server exited, or was not ready in time; the message ends with its output."""


@dataclass(frozen=True)
class LocalServer:
    """A running model server child process."""

    url: str
    port: int
    process: subprocess.Popen
    output_path: Path

    def output(self) -> str:
        """What the server has written to stdout and stderr so far."""
        return self.output_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def server_command(
    model_uri: str | Path,
    name: str,
    port: int,
    version: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """`python -m ctloop.serving.server ...` on loopback, in this Python environment."""
    command = [sys.executable, "-m", "ctloop.serving.server", "--model-dir", str(model_uri)]
    command += ["--name", name, "--host", LOOPBACK, "--port", str(port)]
    if version is not None:
        command += ["--version", version]
    return command + list(extra_args)


@contextmanager
def running_server(
    command: Sequence[str],
    port: int,
    *,
    start_timeout_s: float = START_TIMEOUT_S,
    stop_timeout_s: float = STOP_TIMEOUT_S,
    output_path: Path | None = None,
    ready_path: str = READY_PATH,
    what: str = "model server",
) -> Iterator[LocalServer]:
    """Start `command` (a server that will listen on `LOOPBACK:port`), yield it once
    `ready_path` answers 200, and stop it on exit, whatever happened inside. `what` names the
    server in errors (another server than the predictor, e.g. Prometheus, starts this way too).

    The server's output goes to `output_path`, kept afterwards; by default to a temporary
    file removed with the server.

    Raises:
        ServerStartError: the process exited before it was ready, or was not ready within
            `start_timeout_s`; the message quotes the end of its output.
    """
    with tempfile.TemporaryDirectory(prefix="ctloop-server-") as scratch:
        output_path = output_path or Path(scratch) / "server.log"
        with open(output_path, "wb") as sink:
            process = subprocess.Popen(list(command), stdout=sink, stderr=subprocess.STDOUT)
        server = LocalServer(f"http://{LOOPBACK}:{port}", port, process, output_path)
        try:
            _wait_until_ready(server, start_timeout_s, ready_path, what)
            yield server
        finally:
            stop(process, stop_timeout_s)


def stop(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`; return the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=timeout_s)


def _wait_until_ready(server: LocalServer, timeout_s: float, ready_path: str, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while True:
            code = server.process.poll()
            if code is not None:
                raise ServerStartError(f"{what} exited with code {code}{_tail(server)}")
            try:
                if client.get(ready_path).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{what} not ready at {server.url}{ready_path} after {timeout_s:g} s"
                    f"{_tail(server)}"
                )
            time.sleep(0.2)


def _tail(server: LocalServer) -> str:
    output = server.output().strip()
    if not output:
        return " (it wrote nothing)"
    if len(output) > _OUTPUT_TAIL_CHARS:
        output = "..." + output[-_OUTPUT_TAIL_CHARS:]
    return f"; its output:\n{output}"
