"""What a shadow model costs the served model: throughput and latency with and without one.

Run: `.venv/bin/python tests/benchmarks/bench_shadow_serving.py [--seconds 10] [--rounds 3]`.
Needs `wrk` (Debian/Ubuntu: `apt-get install -y wrk`; macOS: `brew install wrk`), built with
LuaJIT (Debian's is), whose ffi reads the clock that paces the requests.

Two synthetic models of the same 30 features (200 trees of depth 6, trained as
tests/benchmarks/bench_serving.py trains its model, with eta 0.1 and 0.12, so they disagree
on some rows): two ctloop servers on loopback, both serving the first, one of them with the
second as its shadow (`--shadow-model-uri`). For v1 JSON batches of 1 and 100 rows:

1. saturation: `wrk -t2 -c8` as fast as each server answers, the server without a shadow
   first; its requests/s is the saturation load;
2. half load: both servers at half that rate, offered on a fixed schedule (each wrk thread
   sends its share at even intervals; a connection that is still waiting lets the next one
   send, so a slower server is not offered less), `--rounds` times, alternating servers.

Printed: requests/s, rows/s, p50 and p99 as wrk sees them, the server's CPU per request, and
at half load the median over the rounds, with the goal beside it (with a shadow: p99 within
10 % and throughput within 15 % of no shadow at half the saturation load). The shadow
server's `/metrics` at the end says how many rows its shadow compared and skipped. wrk and
the servers share this machine's CPUs. Nothing is asserted: it prints figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import (  # noqa: E402
    NAME,
    WRK_SCRIPT,
    Peer,
    WrkResult,
    check_scores,
    run_wrk,
    running,
    train_model,
    v1_body,
    write_body,
)

BATCHES = (1, 100)
THREADS, CONNECTIONS = 2, 8
PACED_SCRIPT = (
    """
local ffi = require("ffi")
ffi.cdef[[int clock_gettime(int clock, long *seconds_and_nanoseconds);]]
local spec = ffi.new("long[2]")
local function now_ms()
  ffi.C.clock_gettime(1, spec)  -- CLOCK_MONOTONIC
  return tonumber(spec[0]) * 1000 + tonumber(spec[1]) / 1e6
end
local interval_ms = {interval_ms}
local next_ms = nil

delay = function()
  local now = now_ms()
  if next_ms == nil then next_ms = now end
  local wait = next_ms - now
  next_ms = next_ms + interval_ms
  if wait < 0 then return 0 end
  return wait
end
"""
    + WRK_SCRIPT
)
"""wrk calls `delay` (per thread) before each request it sends: the thread's requests go out
at even intervals, whichever of its connections is free. No braces: `run_wrk` formats the text."""


def shadow_metrics(url: str) -> dict[str, float]:
    """The shadow's counters from a server's /metrics, summed over label sets."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "ctloop_shadow_rows_compared_total": "compared",
        "ctloop_shadow_rows_skipped_total": "skipped",
        "ctloop_shadow_errors_total": "errors",
        "ctloop_shadow_disagreements_total": "disagreements",
    }
    figures = dict.fromkeys(wanted.values(), 0.0)
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                figures[wanted[sample.name]] += sample.value
    return figures


def paced(rate: float, seconds: float, url: str, body: Path, scratch: Path, pid: int) -> WrkResult:
    """wrk offering `rate` requests/s on a fixed schedule."""
    interval_ms = THREADS * 1000.0 / rate
    script = PACED_SCRIPT.replace("{interval_ms}", f"{interval_ms:.4f}")  # then run_wrk formats
    return run_wrk(url, body, THREADS, CONNECTIONS, seconds, scratch, pid, script)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="wrk duration of each cell")
    parser.add_argument("--rounds", type=int, default=5, help="half-load runs per server")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=list(BATCHES), help="rows per request"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench_shadow_serving needs wrk: `apt-get install -y wrk`", file=sys.stderr)
        sys.exit(2)

    import os

    import numpy as np

    from ctloop.serving.local_server import free_port, server_command

    with tempfile.TemporaryDirectory(prefix="ctloop-bench-shadow-") as tmp:
        scratch = Path(tmp)
        booster, _, _, rows = train_model(scratch / "served", 0.1, "1")
        train_model(scratch / "shadow", 0.12, "2")
        serial = booster.copy()
        serial.set_param({"nthread": 1})
        expected = serial.inplace_predict(np.asarray(rows[:100], dtype=np.float32)).tolist()
        v1 = f"/v1/models/{NAME}:predict"
        ports = free_port(), free_port()
        shadow_flag = ["--shadow-model-uri", str(scratch / "shadow")]
        servers = [
            Peer("ctloop", server_command(scratch / "served", NAME, ports[0]), ports[0], v1,
                 v1_body, "/v2/health/ready"),
            Peer("+shadow", server_command(scratch / "served", NAME, ports[1], None, shadow_flag),
                 ports[1], v1, v1_body, "/v2/health/ready"),
        ]  # fmt: skip
        print(
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.seconds:g} s "
            f"per cell, {args.rounds} half-load rounds; wrk -t{THREADS} -c{CONNECTIONS}"
        )
        saturation: dict[tuple[str, int], WrkResult] = {}
        half: dict[tuple[str, int], list[WrkResult]] = {}
        rates: dict[int, float] = {}
        with ExitStack() as stack:
            started = []
            for peer in servers:
                url, pid = stack.enter_context(running(peer, scratch / f"{peer.name}.log"))
                bodies = {batch: write_body(scratch, peer, rows, batch) for batch in args.batches}
                checked = write_body(scratch, peer, rows, 100)
                print(f"{peer.name}: {check_scores(url, peer, checked, expected)}")
                run_wrk(url + v1, checked, 1, 1, 1, scratch)  # warm-up
                started.append((peer, url, pid, bodies))
            for batch in args.batches:
                for peer, url, pid, bodies in started:
                    saturation[peer.name, batch] = run_wrk(
                        url + v1, bodies[batch], THREADS, CONNECTIONS, args.seconds, scratch, pid
                    )
                rates[batch] = saturation["ctloop", batch].per_second / 2
                for _ in range(args.rounds):
                    for peer, url, pid, bodies in started:
                        half.setdefault((peer.name, batch), []).append(
                            paced(rates[batch], args.seconds, url + v1, bodies[batch], scratch, pid)
                        )
            figures = shadow_metrics(started[1][1])
        report(saturation, half, rates, figures)
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def _row(label: str, batch: int, load: str, result: WrkResult) -> str:
    cpu_ms = result.server_cpu_s * 1e3 / max(result.requests, 1)
    return (
        f"{label:<9}{batch:>6}  {load:<16}{result.per_second:>8.0f}"
        f"{result.per_second * batch:>9.0f}{result.p50_ms:>8.2f}{result.p99_ms:>8.2f}"
        f"{result.non_2xx + result.errors:>7}{cpu_ms:>11.2f}"
    )


def report(
    saturation: dict[tuple[str, int], WrkResult],
    half: dict[tuple[str, int], list[WrkResult]],
    rates: dict[int, float],
    figures: dict[str, float],
) -> None:
    print()
    print(
        f"{'server':<9}{'batch':>6}  {'load':<16}{'req/s':>8}{'rows/s':>9}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'errors':>7}{'CPU ms/req':>11}"
    )
    medians: dict[tuple[str, int], WrkResult] = {}
    batches = sorted(rates)
    for batch in batches:
        for name in ("ctloop", "+shadow"):
            print(_row(name, batch, "saturation", saturation[name, batch]))
        for name in ("ctloop", "+shadow"):
            runs = half[name, batch]
            median = WrkResult(
                requests=int(statistics.median(run.requests for run in runs)),
                seconds=statistics.median(run.seconds for run in runs),
                p50_ms=statistics.median(run.p50_ms for run in runs),
                p99_ms=statistics.median(run.p99_ms for run in runs),
                max_ms=max(run.max_ms for run in runs),
                non_2xx=sum(run.non_2xx for run in runs),
                errors=sum(run.errors for run in runs),
                server_cpu_s=statistics.median(run.server_cpu_s for run in runs),
            )
            medians[name, batch] = median
            print(_row(name, batch, f"half ({rates[batch]:.0f}/s)", median))
            p99s = ", ".join(f"{run.p99_ms:.2f}" for run in runs)
            print(f"{'':<17}p99 of each round: {p99s}")
    print(
        f"\nshadow: {figures['compared']:.0f} rows compared, {figures['skipped']:.0f} skipped "
        f"(queue full), {figures['errors']:.0f} errors, {figures['disagreements']:.0f} "
        "disagreements"
    )
    print("\ngoals at half load (not asserted): with a shadow, p99 <= 1.10x and throughput >= "
          "0.85x of no shadow")  # fmt: skip
    for batch in batches:
        plain, shadowed = medians["ctloop", batch], medians["+shadow", batch]
        full = saturation["+shadow", batch].per_second / saturation["ctloop", batch].per_second
        print(
            f"  batch {batch:>3}: p99 {shadowed.p99_ms / plain.p99_ms:.2f}x, throughput "
            f"{shadowed.per_second / plain.per_second:.2f}x; at saturation {full:.2f}x"
        )


if __name__ == "__main__":
    main()
