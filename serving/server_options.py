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
BODY_BYTES_PER_ROW = 2048
"""Request body allowed per row of `--max-batch-rows` when `--max-body-bytes` is not given.
A JSON row costs about 8 bytes a value as a list and 25 as an object (a Telco row of 19
features: 150 and 470 bytes), so 2 KiB a row leaves room for ~80 features sent as objects
and ~250 as lists, while a body that could never hold an acceptable batch is refused before
the server reads it: parsing JSON costs several times its size in memory."""
DEFAULT_MAX_BODY_BYTES = DEFAULT_MAX_BATCH_ROWS * BODY_BYTES_PER_ROW
"""20 MB: the body limit at the default `--max-batch-rows`."""
DEFAULT_SHADOW_QUEUE_ROWS = 2 * DEFAULT_MAX_BATCH_ROWS
"""Rows that may wait for the shadow model; a batch that would exceed it is skipped (and
counted). Two of the largest batches: room for a burst, and the queue's memory stays ~7 MB
at 30 features."""
DEFAULT_FEATURE_SERVICE = "churn_features"
"""The feature service of the demo's Feast repository (ctloop.components.features.repo)."""
PORT_RANGE = range(1, 65536)
"""TCP ports a server can listen on; uvicorn takes any integer and binds the OS's choice
for one outside it (a random port for 99999), while logging the number it was given."""


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
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="HTTP port, 1-65535 (%(default)s)"
    )
    parser.add_argument(
        "--version", help="version to report (default: version.txt or the registry's, else none)"
    )
    parser.add_argument(
        "--max-batch-rows",
        type=int,
        default=DEFAULT_MAX_BATCH_ROWS,
        help="most rows a request (%(default)s)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        help="largest request body, refused with HTTP 413 before it is read (default: "
        f"{BODY_BYTES_PER_ROW} bytes per --max-batch-rows row, {DEFAULT_MAX_BODY_BYTES} at the "
        "default)",
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
    parser.add_argument(
        "--shadow-model-uri",
        help="a second model that scores the same rows off the request path, for comparison "
        "(paired ctloop_shadow_* metrics); nobody sees its answers: a local folder, file://, "
        "MLflow models:/ or runs:/, or a URI pyarrow reads (s3://, gs://, ...)",
    )
    parser.add_argument(
        "--shadow-version",
        help="the shadow's version in the metrics (default: its version.txt or the registry's)",
    )
    parser.add_argument(
        "--shadow-queue-rows",
        type=int,
        default=DEFAULT_SHADOW_QUEUE_ROWS,
        help="most rows waiting for the shadow; a batch that does not fit is skipped and "
        "counted, never waited for (%(default)s)",
    )
    parser.add_argument(
        "--variant",
        help="the A/B variant this server is (on a cluster, the version it serves); every "
        "answer is tagged with it (v1 'variant', v2 parameters.variant)",
    )
    parser.add_argument(
        "--prediction-log-uri",
        help="write every scored row (request id, variant, version, inputs hash, score, time) to "
        "rolling Parquet files under this folder or pyarrow URI (s3://, gs://, ...)",
    )
    parser.add_argument(
        "--feast-repo",
        help="a Feast repository, the folder holding feature_store.yaml or its s3://, gs:// or "
        "file:// URI: v1 instances that hold only "
        "entity keys get their features from its online store (needs pip install "
        "'ctloop[feast]')",
    )
    parser.add_argument(
        "--feature-service",
        default=DEFAULT_FEATURE_SERVICE,
        help="the feature service the model was trained on, for --feast-repo (%(default)s)",
    )


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags as `serve`'s keyword arguments.

    Raises:
        ValueError: a flag's value is out of range (checked before any model is loaded).
    """
    if args.port not in PORT_RANGE:
        raise ValueError(f"--port {args.port} is not a TCP port: give one from 1 to 65535")
    for flag in ("max_batch_rows", "max_body_bytes", "threads", "shadow_queue_rows"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} {value} must be >= 1")
    if args.feature_service != DEFAULT_FEATURE_SERVICE and not args.feast_repo:
        raise ValueError("--feature-service names a service of --feast-repo: give both")
    if args.shadow_version and not args.shadow_model_uri:
        raise ValueError("--shadow-version names the version of --shadow-model-uri: give both")
    max_body_bytes = args.max_body_bytes or args.max_batch_rows * BODY_BYTES_PER_ROW
    return {
        "name": args.name,
        "host": args.host,
        "port": args.port,
        "version": args.version,
        "max_batch_rows": args.max_batch_rows,
        "max_body_bytes": max_body_bytes,
        "threads": args.threads,
        "request_logs": args.request_logs,
        "shadow_model_uri": args.shadow_model_uri,
        "shadow_version": args.shadow_version,
        "shadow_queue_rows": args.shadow_queue_rows,
        "variant": args.variant,
        "prediction_log_uri": args.prediction_log_uri,
        "feast_repo": args.feast_repo,
        "feature_service": args.feature_service,
    }
