"""Run the ctloop predictor in KServe's model server, on loopback unless told otherwise.

`python -m ctloop.serving.server --model-dir /mnt/models --name churn --host 0.0.0.0` is the
container entrypoint; locally `serve(model_dir, "churn")` listens on 127.0.0.1:8080 only.

KServe 0.21's `ModelServer.start` builds its uvicorn config with `host="0.0.0.0"` hard-coded
and offers no argument for it. `LoopbackModelServer` sets the host on that config in
`setup_event_loop`, the one overridable step that `start` calls after building the REST server
and before serving; uvicorn reads the host only when it binds. The tests check the bound
address from uvicorn's start-up line, so a KServe release that reorders `start` fails loudly.

Every request passes `BodyLimit` first (`ctloop.serving.body_limit`): a body over
`--max-body-bytes` gets HTTP 413 before it is read. A v2 body that is not an Open Inference
Protocol request gets a 400 with one message (`oip_validation_error_handler`), not FastAPI's
422 with pydantic's error list.

Per-request log lines (uvicorn's access line, KServe's latency line, and the two lines of
KServe's timing middleware, which is left out with them) are off unless `--request-logs` asks
for them: together they are a large share of the server's work on a small request
(docs/performance.md). `/metrics` has the counts and latencies.

Without request logs, two more things cut the CPU a request costs (measured by
tests/benchmarks/bench_serving.py against a minimal `kserve.Model`): v1 predict of a ctloop
predictor is answered by `V1PredictRoute` in front of KServe's FastAPI app
(`ctloop.serving.v1_route`; every other request still goes to KServe), and the event loop is
uvloop's.
"""

from __future__ import annotations

import os

# XGBoost's OpenMP runtime (libgomp) reads this once, when XGBoost is imported below. After
# each parallel region its threads spin 300,000 times (for the next region) before sleeping:
# scoring a 100-row batch on 2 threads then costs twice the CPU of 1 thread, which a CPU
# autoscaler reads as twice the load and neighbouring processes lose. 1,000 spins keep most of
# the second thread's speed for little CPU (docs/performance.md).
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import uvloop  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from kserve import ModelServer  # noqa: E402
from kserve.logging import KSERVE_LOGGER_NAME, KSERVE_TRACE_LOGGER_NAME  # noqa: E402
from kserve.model_server import app as kserve_app  # noqa: E402

from ctloop.components.contract.model_uri import local_model_dir  # noqa: E402
from ctloop.serving.body_limit import BodyLimit  # noqa: E402
from ctloop.serving.feature_lookup import FeatureLookup  # noqa: E402
from ctloop.serving.predictor import CtloopPredictor  # noqa: E402
from ctloop.serving.request_decoding import oip_validation_error_handler  # noqa: E402
from ctloop.serving.server_options import (  # noqa: E402
    DEFAULT_FEATURE_SERVICE,
    DEFAULT_HOST,
    DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    DEFAULT_SHADOW_QUEUE_ROWS,
    add_server_options,
    server_options,
)
from ctloop.serving.shadow import local_shadow_dir  # noqa: E402
from ctloop.serving.v1_route import V1PredictRoute  # noqa: E402

REQUEST_LOGGERS = ("uvicorn.access", KSERVE_TRACE_LOGGER_NAME)
"""Loggers that write a line per request; set to WARNING unless request logs are asked for."""


class LoopbackModelServer(ModelServer):
    """KServe's `ModelServer` with the REST listen address as a parameter, request bodies
    limited to `max_body_bytes`, and per-request log lines only when `request_logs` is true."""

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        request_logs: bool = False,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        **kwargs,
    ) -> None:
        self.host = host
        self.request_logs = request_logs
        self.max_body_bytes = max_body_bytes
        kwargs.setdefault("enable_latency_logging", request_logs)
        super().__init__(**kwargs)  # configures KServe's and uvicorn's loggers
        if not request_logs:
            for name in REQUEST_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)

    def setup_event_loop(self) -> None:
        if self._rest_server is None:
            raise RuntimeError(
                "kserve's ModelServer.start no longer builds the REST server before "
                "setup_event_loop; LoopbackModelServer cannot set the listen address"
            )
        self._rest_server.config.host = self.host
        # uvicorn imports KServe's app by name when it starts; handing it that app object
        # behind the body limit (and the v1 predict route) leaves KServe adding its routes and
        # handlers to the same object when the REST server starts.
        kserve_app.add_exception_handler(RequestValidationError, oip_validation_error_handler)
        app = kserve_app
        if not self.request_logs and self.access_log_format is None:
            # With request logs, v1 predict takes KServe's path, which logs its latency line.
            app = V1PredictRoute(kserve_app, self.dataplane.model_registry)
            # uvicorn's X-Forwarded-* rewriting of the client address (a middleware that reads
            # the headers of every request from a trusted proxy, as Knative's queue-proxy on
            # 127.0.0.1 is) is for access logs, which are off.
            self._rest_server.config.proxy_headers = False
            # KServe's REST middlewares are a timing one, whose only output is two kserve.trace
            # lines per request, and an access logger for access_log_format. Without request
            # logs neither has anything to do, and the timing one costs ~0.1-0.2 ms of CPU per
            # request (getrusage, route matching, wrapping send). The REST app is built after
            # this step, when the server starts.
            self._rest_server._add_middlewares = _no_middlewares
        self._rest_server.config.app = BodyLimit(app, self.max_body_bytes)
        super().setup_event_loop()
        # `start` then runs the servers with asyncio.run, which ignores uvicorn's `loop`
        # setting and builds its loop from the policy: uvloop's, whose transports cost less
        # CPU per request than asyncio's. (KServe's setting of the default executor above went
        # to a loop asyncio.run does not use, with either policy.)
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _no_middlewares(app: object) -> None:
    """Stands in for `RESTServer._add_middlewares` when no request is logged."""


def serve(
    model_uri: str,
    name: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    version: str | None = None,
    *,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threads: int | None = None,
    tracking_uri: str | None = None,
    request_logs: bool = False,
    shadow_model_uri: str | None = None,
    shadow_version: str | None = None,
    shadow_queue_rows: int = DEFAULT_SHADOW_QUEUE_ROWS,
    variant: str | None = None,
    prediction_log_uri: str | None = None,
    feast_repo: str | None = None,
    feature_service: str = DEFAULT_FEATURE_SERVICE,
) -> None:
    """Load the model at `model_uri` and serve it until stopped.

    `model_uri` is a local folder, a file:// URI, or an MLflow `models:/`/`runs:/` URI
    (downloaded to a temporary folder, removed when the server stops; `tracking_uri` names
    the MLflow server). Serves REST only (v1, v2, `/metrics`) with one worker; gRPC is off.
    `request_logs` turns on a log line per request (see the module docstring). `threads`
    caps the scoring threads of large batches (default: `usable_cpus()`). Bodies over
    `max_body_bytes` get HTTP 413 unread.

    `shadow_model_uri` (any URI `local_shadow_dir` takes) is loaded beside the served model and
    scores the same rows off the request path (`ctloop.serving.shadow`); `variant` tags every
    answer; `prediction_log_uri` records every scored row (`ctloop.serving.prediction_log`,
    closed, that is flushed, when the server stops). With `feast_repo`, v1 instances holding
    only entity keys get `feature_service`'s features from Feast's online store
    (`ctloop.serving.feature_lookup`).

    Once the model is loaded, the objects so far (imports, model) are frozen out of the
    garbage collector: they live as long as the process, and a full collection, which the
    10,000 row lists of a large v1 batch trigger every ten or so batches, would otherwise walk
    them all (~125 ms for ~215,000 objects) holding the GIL, stalling health probes.

    Raises:
        ModelLoadingError: the URI or the model folder (served or shadow) cannot be served.
        ValueError: the prediction log URI names no filesystem pyarrow opens.
    """
    with (
        tempfile.TemporaryDirectory(prefix="ctloop-model-") as download_dir,
        tempfile.TemporaryDirectory(prefix="ctloop-shadow-") as shadow_download,
    ):
        model_dir = local_model_dir(model_uri, download_dir, tracking_uri)
        shadow_dir = None
        if shadow_model_uri:
            shadow_dir = local_shadow_dir(shadow_model_uri, shadow_download, tracking_uri)
        prediction_log = None
        if prediction_log_uri:
            from ctloop.serving.prediction_log import PredictionLog

            prediction_log = PredictionLog(prediction_log_uri)
        server = LoopbackModelServer(
            host=host,
            http_port=port,
            enable_grpc=False,
            request_logs=request_logs,
            max_body_bytes=max_body_bytes,
        )
        _log_like_kserve()
        predictor = CtloopPredictor(
            name,
            model_dir,
            version,
            max_batch_rows=max_batch_rows,
            nthread=threads,
            shadow_model_dir=shadow_dir,
            shadow_version=shadow_version,
            shadow_queue_rows=shadow_queue_rows,
            variant=variant,
            prediction_log=prediction_log,
            feature_lookup=(
                FeatureLookup(feast_repo, feature_service, max_rows=max_batch_rows)
                if feast_repo
                else None
            ),
        )
        try:
            predictor.load()
            gc.collect()
            gc.freeze()
            server.start([predictor])
        finally:
            if prediction_log is not None:
                prediction_log.close()


def _log_like_kserve() -> None:
    """Send ctloop's log lines (model loaded, profile missing) to KServe's configured handlers,
    in its format; `ModelServer()` configures only the `kserve` and `uvicorn` loggers."""
    ctloop_logger = logging.getLogger("ctloop")
    ctloop_logger.setLevel(logging.INFO)
    for handler in logging.getLogger(KSERVE_LOGGER_NAME).handlers:
        ctloop_logger.addHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    """The container entrypoint's flags (`serving/Dockerfile`, the ServingRuntime's args)."""
    # Dashes, not KServe's underscore flags: kserve.model_server parses sys.argv at import
    # and would otherwise claim (and abbreviate-match) them.
    parser = argparse.ArgumentParser(
        prog="python -m ctloop.serving.server", description="Serve a ctloop model with KServe."
    )
    parser.add_argument("--model-dir", required=True, help="local folder or file:// URI")
    add_server_options(parser, default_name=None)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = server_options(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        serve(args.model_dir, **options)
    except ValueError as error:  # a model or a log URI that cannot be used (ModelLoadingError
        # among them): one line in the pod's log, not a traceback
        parser.exit(2, f"{parser.prog}: {error}\n")


if __name__ == "__main__":
    main()
