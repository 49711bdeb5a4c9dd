"""Run the ctloop predictor in KServe's model server, on loopback unless told otherwise.

`python -m ctloop.serving.server --model-dir /mnt/models --name churn --host 0.0.0.0` is the
container entrypoint; locally `serve(model_dir, "churn")` listens on 127.0.0.1:8080 only.

KServe 0.21's `ModelServer.start` builds its uvicorn config with `host="0.0.0.0"` hard-coded
and offers no argument for it. `LoopbackModelServer` sets the host on that config in
`setup_event_loop`, the one overridable step that `start` calls after building the REST server
and before serving; uvicorn reads the host only when it binds. The tests check the bound
address from uvicorn's start-up line, so a KServe release that reorders `start` fails loudly.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from kserve import ModelServer
from kserve.logging import KSERVE_LOGGER_NAME

from ctloop.serving.model_loading import local_model_dir
from ctloop.serving.predictor import DEFAULT_MAX_BATCH_ROWS, CtloopPredictor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class LoopbackModelServer(ModelServer):
    """KServe's `ModelServer` with the REST listen address as a parameter."""

    def __init__(self, *, host: str = DEFAULT_HOST, **kwargs) -> None:
        self.host = host
        super().__init__(**kwargs)

    def setup_event_loop(self) -> None:
        if self._rest_server is None:
            raise RuntimeError(
                "kserve's ModelServer.start no longer builds the REST server before "
                "setup_event_loop; LoopbackModelServer cannot set the listen address"
            )
        self._rest_server.config.host = self.host
        super().setup_event_loop()


def serve(
    model_uri: str,
    name: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    version: str | None = None,
    *,
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS,
) -> None:
    """Load the model at `model_uri` (local path or file://) and serve it until stopped.

    Serves REST only (v1, v2, `/metrics`) with one worker; gRPC is off.
    """
    server = LoopbackModelServer(host=host, http_port=port, enable_grpc=False)
    _log_like_kserve()
    predictor = CtloopPredictor(
        name, local_model_dir(model_uri), version, max_batch_rows=max_batch_rows
    )
    predictor.load()
    server.start([predictor])


def _log_like_kserve() -> None:
    """Send ctloop's log lines (model loaded, profile missing) to KServe's configured handlers,
    in its format; `ModelServer()` configures only the `kserve` and `uvicorn` loggers."""
    ctloop_logger = logging.getLogger("ctloop")
    ctloop_logger.setLevel(logging.INFO)
    for handler in logging.getLogger(KSERVE_LOGGER_NAME).handlers:
        ctloop_logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> None:
    # Dashes, not KServe's underscore flags: kserve.model_server parses sys.argv at import
    # and would otherwise claim (and abbreviate-match) them.
    parser = argparse.ArgumentParser(description="Serve a ctloop model with KServe.")
    parser.add_argument("--model-dir", required=True, help="local folder or file:// URI")
    parser.add_argument("--name", required=True, help="model name in the URLs")
    parser.add_argument("--host", default=DEFAULT_HOST, help="0.0.0.0 inside a container")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--version", default=None, help="default: version.txt, else unknown")
    parser.add_argument("--max-batch-rows", type=int, default=DEFAULT_MAX_BATCH_ROWS)
    args = parser.parse_args(argv)
    serve(
        args.model_dir,
        args.name,
        args.host,
        args.port,
        args.version,
        max_batch_rows=args.max_batch_rows,
    )


if __name__ == "__main__":
    main()
