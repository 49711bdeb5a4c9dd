"""Soak the ctloop predictor: a minute of load with bad requests mixed in, and what it costs.

Run: `.venv/bin/python tests/benchmarks/soak_serving.py [--seconds 60] [--connections 32]`.
Needs `wrk` (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`).

Serves bench_serving.py's synthetic model (30 numeric features, 200 trees of depth 6) with
`python -m ctloop.serving.server` and its defaults, then, for `--seconds`:

- `wrk -t2 -c32` POSTs a v1 batch of `--batch` rows; one request in a hundred, per wrk
  thread, is malformed instead (in turn: a body that is not JSON, a row of the wrong width,
  a value beyond float32), each of which must get a 400;
- every `--oversized-every` seconds this process POSTs a body 1 MiB over the server's body
  limit, with a Content-Length and chunked in turn, each of which must get a 413;
- every 50 ms it asks `/v2/health/ready`, and it samples the server's RSS every 100 ms.

It prints the answers by class (wrk counts them in its `response` hook), the readiness probes
(failures, p99 and max latency), the server's RSS at the start, at its peak and after the
load (once the server has been idle for `--settle` seconds), and three goals: no 5xx, no
failed probe, RSS after within 10 % of the start. It exits 1 when a goal is missed, so a CI
job can run it; it is bounded (`--seconds` plus the start and the model's training), and not
collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench_serving import NAME, WRK_SCRIPT, Peer, percentile, run_wrk, running, train_model

from ctloop.serving.local_server import free_port, server_command
from ctloop.serving.server_options import DEFAULT_MAX_BODY_BYTES

READY_PATH = "/v2/health/ready"
PROBE_EVERY_S = 0.05
RSS_EVERY_S = 0.1
RSS_GOAL = 1.10
"""RSS after the load may be at most this much of the RSS before it."""
COUNTS_ENV = "SOAK_COUNTS_PATH"
SOAK_LUA = """
-- One request in a hundred (per wrk thread) is malformed; answers are counted by class.
local malformed = {
  '{"instances": [[1, 2',
  '{"instances": [[1.0, 2.0]]}',
  '{"instances": [[1e39' .. string.rep(', 0', 29) .. ']]}',
}
local soak_threads = {}
setup = function(thread) table.insert(soak_threads, thread) end
init = function(args) sent = 0; ok = 0; client_errors = 0; server_errors = 0 end
request = function()
  sent = sent + 1
  if sent % 100 == 0 then
    return wrk.format(nil, nil, nil, malformed[(sent / 100) % #malformed + 1])
  end
  return wrk.format()
end
response = function(status, headers, body)
  if status >= 500 then server_errors = server_errors + 1
  elseif status >= 400 then client_errors = client_errors + 1
  else ok = ok + 1 end
end
local bench_done = done
done = function(summary, latency, requests)
  bench_done(summary, latency, requests)
  local totals = {0, 0, 0}
  for _, thread in ipairs(soak_threads) do
    totals[1] = totals[1] + thread:get("ok")
    totals[2] = totals[2] + thread:get("client_errors")
    totals[3] = totals[3] + thread:get("server_errors")
  end
  local out = assert(io.open(os.getenv("SOAK_COUNTS_PATH"), "w"))
  out:write(string.format("%d %d %d\\n", totals[1], totals[2], totals[3]))
  out:close()
end
"""


@dataclass
class Watch:
    """What the background threads saw while wrk ran."""

    probe_seconds: list[float] = field(default_factory=list)
    probe_failures: int = 0
    rss_bytes: list[int] = field(default_factory=list)
    oversized: Counter = field(default_factory=Counter)


def probe_readiness(url: str, watch: Watch, stop: threading.Event) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                ok = client.get(READY_PATH).status_code == 200
            except httpx.HTTPError:
                ok = False
            watch.probe_seconds.append(time.perf_counter() - started)
            watch.probe_failures += not ok
            stop.wait(PROBE_EVERY_S)


def sample_rss(pid: int, watch: Watch, stop: threading.Event) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        watch.rss_bytes.append(process.memory_info().rss)
        stop.wait(RSS_EVERY_S)


def send_oversized(url: str, every_s: float, watch: Watch, stop: threading.Event) -> None:
    """POST a body 1 MiB over the default limit every `every_s`, declared and chunked in turn."""
    import httpx

    body = b"x" * (DEFAULT_MAX_BODY_BYTES + (1 << 20))

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    sent = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.wait(every_s):
            content = body if sent % 2 == 0 else chunked()
            try:
                status = client.post(
                    f"/v1/models/{NAME}:predict",
                    content=content,
                    headers={"Content-Type": "application/json"},
                ).status_code
            except httpx.HTTPError as error:
                status = type(error).__name__
            watch.oversized[status] += 1
            sent += 1


def rss_now(pid: int) -> int:
    import psutil

    return psutil.Process(pid).memory_info().rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="load duration")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--batch", type=int, default=1, help="rows per v1 request")
    parser.add_argument("--oversized-every", type=float, default=3, help="seconds between them")
    parser.add_argument("--settle", type=float, default=3, help="idle seconds before 'after'")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("soak_serving needs wrk: `apt-get install -y wrk` (Debian/Ubuntu)", file=sys.stderr)
        sys.exit(2)

    with tempfile.TemporaryDirectory(prefix="ctloop-soak-serving-") as tmp:
        scratch = Path(tmp)
        _, _, _, rows = train_model(scratch / "model")
        port = free_port()
        peer = Peer(
            "ctloop",
            server_command(scratch / "model", NAME, port),
            port,
            f"/v1/models/{NAME}:predict",
            lambda batch: {"instances": batch},
            READY_PATH,
        )
        body = scratch / "batch.json"
        body.write_text(json.dumps(peer.body(rows[: args.batch])))
        counts_path = scratch / "counts.txt"
        os.environ[COUNTS_ENV] = str(counts_path)
        script = WRK_SCRIPT + SOAK_LUA.replace("{", "{{").replace("}", "}}")
        with running(peer, scratch / "server.log") as (url, pid):
            run_wrk(url + peer.predict_path, body, 1, 1, 1, scratch)  # warm-up
            time.sleep(args.settle)
            start_rss = rss_now(pid)
            watch, stop = Watch(), threading.Event()
            watchers = [
                threading.Thread(target=probe_readiness, args=(url, watch, stop)),
                threading.Thread(target=sample_rss, args=(pid, watch, stop)),
                threading.Thread(
                    target=send_oversized, args=(url, args.oversized_every, watch, stop)
                ),
            ]
            for watcher in watchers:
                watcher.start()
            try:
                load = run_wrk(
                    url + peer.predict_path,
                    body,
                    2,
                    args.connections,
                    args.seconds,
                    scratch,
                    pid,
                    script_text=script,
                )
            finally:
                stop.set()
                for watcher in watchers:
                    watcher.join()
            time.sleep(args.settle)
            after_rss = rss_now(pid)
            ok, client_errors, server_errors = map(int, counts_path.read_text().split())
            log_lines = (scratch / "server.log").read_text(errors="replace").count("\n")
    missed = report(args, load, ok, client_errors, server_errors, watch, start_rss, after_rss)
    print(f"(the server wrote {log_lines} log lines)")
    sys.exit(1 if missed else 0)


def report(args, load, ok, client_errors, server_errors, watch, start_rss, after_rss) -> int:
    """Print the figures and the goals; return how many goals were missed."""
    mib = 1 << 20
    print(
        f"soak: {load.seconds:.0f} s of wrk -t2 -c{args.connections}, {args.batch}-row v1 "
        f"batches, 1 % malformed, an oversized body every {args.oversized_every:g} s; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"requests: {load.requests} ({load.per_second:.0f}/s, p50 {load.p50_ms:.2f} ms, p99 "
        f"{load.p99_ms:.2f} ms, max {load.max_ms:.0f} ms): 2xx {ok}, 4xx {client_errors} "
        f"(the malformed ones), 5xx {server_errors}; socket errors and timeouts {load.errors}; "
        f"server CPU {load.server_cpu_s * 1e3 / max(load.requests, 1):.2f} ms a request"
    )
    print(f"oversized bodies: {dict(watch.oversized)} (status: count)")
    probes = watch.probe_seconds
    print(
        f"readiness: {len(probes)} probes, {watch.probe_failures} failed, p99 "
        f"{percentile(probes, 0.99) * 1e3:.1f} ms, max {max(probes) * 1e3:.1f} ms"
    )
    peak = max([start_rss, after_rss, *watch.rss_bytes])
    print(
        f"server RSS: start {start_rss / mib:.0f} MiB, peak {peak / mib:.0f} MiB, "
        f"after {after_rss / mib:.0f} MiB ({args.settle:g} s idle)"
    )
    goals = {
        "no 5xx": server_errors == 0,
        "every oversized body got 413": set(watch.oversized) <= {413},
        "readiness answered throughout": watch.probe_failures == 0,
        f"RSS after <= {RSS_GOAL:.2f} x start": after_rss <= RSS_GOAL * start_rss,
    }
    for goal, met in goals.items():
        print(f"  {'met   ' if met else 'MISSED'} {goal}")
    return sum(not met for met in goals.values())


if __name__ == "__main__":
    main()
