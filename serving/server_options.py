"""The model server's options, defined once for the container entrypoint and `ctloop serve`.

`python -m ctloop.serving.server` (what the image and the ServingRuntime run) and `ctloop serve`
(a laptop) start the same server; one definition keeps their flags, defaults and checks from
drifting apart. This module imports only argparse, so `ctloop --help` does not load KServe.
"""

import argparse
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BATCH_ROWS = 10_000
"""Largest batch accepted: a bound on the JSON a request may make the server decode and score
(size and time at this bound: docs/performance.md)."""


def add_server_options(parser: argparse.ArgumentParser, *, default_name: str | None) -> None:
    """Add the server's flags; `--name` is required when `default_name` is None."""
    parser.add_argument(
        "--name",
        required=default_name is None,
        default=default_name,
        help="model name in the URLs"
        + (" (default: %(default)s, the InferenceService's default)" if default_name else ""),
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="listen address (%(default)s; 0.0.0.0 in a container)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (%(default)s)")
    parser.add_argument(
        "--version", help="version to report (default: version.txt or the registry's, else unknown)"
    )
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help="most rows a request (%(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="scoring threads for batches over 50 rows (default: the CPUs it may use)",
    )
    parser.add_argument(
        "--request-logs",
        action="store_true",
        help="log a line per request (uvicorn access, KServe latency); off by default: they cost "
        "CPU on every request",
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as `serve`'s keyword arguments.

    Raises:
        ValueError: a flag's value is out of range (checked before any model is loaded).
    """
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads {args.threads} must be >= 1")
    return {
        "name": args.name,
        "host": args.host,
        "port": args.port,
        "version": args.version,
        "max_batch_rows": args.max_batch_rows,
        "threads": args.threads,
        "request_logs": args.request_logs,
    }
