"""A canary traffic split on loopback: one HTTP port in front of a primary and a canary.

On a cluster KServe (Knative, or Gateway API routes in Standard mode) splits an
InferenceService's traffic between its revisions; on a laptop nothing does, so `make demo`
puts this router in front of two local predictors to show a canary taking its share.

The split is deterministic by request count, not random: of the first n requests, exactly
floor(n * percent / 100) go to the canary, spread evenly (request n goes to the canary when
that count steps up). A replay then splits the same way on every run, and any window of
100 consecutive requests holds the percent to within one request. Knative splits each request
at random with the same long-run shares; the analysis reads each version's own figures, so it
does not depend on which requests went where.

Requests and answers pass through unchanged, bodies streamed both ways: method, path, query,
headers (less the hop-by-hop ones, RFC 9110 7.6.1, and Host), status and body. The predictor
therefore still sees the caller's Content-Length (its body limit answers 413 before reading)
and X-Request-Id. A backend that does not answer (refused, reset, timed out) gets a 502 whose
JSON body names the backend and the error, so a caller can tell the router's failure from the
model's. The server is uvicorn (which KServe's own model server runs on) on a thread of the
calling process; starlette and httpx come with KServe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ctloop.serving.local_server import LOOPBACK, free_port

PRIMARY = "primary"
CANARY = "canary"
START_TIMEOUT_S = 10.0
BACKEND_TIMEOUT_S = 30.0
# RFC 9110 7.6.1 (and the headers it names): meaningful for one connection only.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class RouterStartError(RuntimeError):
    """The router did not start listening in time."""


@dataclass
class CanarySplit:
    """Which backend takes each request: `percent` % of them the canary, by request count."""

    percent: int
    counts: dict[str, int] = field(default_factory=lambda: {PRIMARY: 0, CANARY: 0})

    def __post_init__(self) -> None:
        if isinstance(self.percent, bool) or not isinstance(self.percent, int):
            raise ValueError(f"canary percent must be an integer, got {self.percent!r}")
        if not 0 <= self.percent <= 100:
            raise ValueError(f"canary percent must be between 0 and 100, got {self.percent}")

    def next_backend(self) -> str:
        """The backend of the next request; counts it."""
        seen = self.counts[PRIMARY] + self.counts[CANARY]
        steps_up = (seen + 1) * self.percent // 100 > seen * self.percent // 100
        backend = CANARY if steps_up else PRIMARY
        self.counts[backend] += 1
        return backend


def router_app(
    primary_url: str,
    canary_url: str,
    split: CanarySplit,
    *,
    timeout_s: float = BACKEND_TIMEOUT_S,
) -> Starlette:
    """The ASGI application forwarding every request to the backend `split` picks.

    One event loop serves it, so `split` is only ever updated by one request at a time.
    """
    backends = {PRIMARY: primary_url.rstrip("/"), CANARY: canary_url.rstrip("/")}
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_app):
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            clients["http"] = client
            yield

    async def forward(request: Request) -> Response:
        name = split.next_backend()
        target = request.scope.get("raw_path") or request.url.path.encode()
        if request.scope.get("query_string"):
            target += b"?" + request.scope["query_string"]
        headers = [
            (key, value)
            for key, value in request.headers.items()
            if key not in HOP_BY_HOP and key != "host"
        ]
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        outgoing = clients["http"].build_request(
            request.method,
            backends[name] + target.decode("latin-1"),
            headers=headers,
            content=request.stream() if has_body else None,
        )
        try:
            answer = await clients["http"].send(outgoing, stream=True)
        except httpx.TransportError as error:
            return JSONResponse(
                {"error": f"{name} backend {backends[name]} did not answer: {error!r}"},
                status_code=502,
            )
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers={key: value for key, value in answer.headers.items() if key not in HOP_BY_HOP},
            background=BackgroundTask(answer.aclose),
        )

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[Route("/{path:path}", forward, methods=methods)],
        lifespan=lifespan,
    )


@dataclass(frozen=True)
class LocalRouter:
    """A running router: its URL and the split, whose `counts` say where requests went."""

    url: str
    split: CanarySplit


@contextmanager
def running_router(
    primary_url: str,
    canary_url: str,
    canary_percent: int,
    *,
    port: int | None = None,
    timeout_s: float = BACKEND_TIMEOUT_S,
) -> Iterator[LocalRouter]:
    """Serve the split on `LOOPBACK:port` (default a free port) from a thread; yield it once
    listening; stop it on exit.

    Raises:
        ValueError: `canary_percent` is not an integer from 0 to 100.
        RouterStartError: not listening within START_TIMEOUT_S.
    """
    split = CanarySplit(canary_percent)
    port = port or free_port()
    app = router_app(primary_url, canary_url, split, timeout_s=timeout_s)
    config = uvicorn.Config(app, host=LOOPBACK, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"router:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() >= deadline:
                raise RouterStartError(f"router on {LOOPBACK}:{port} did not start listening")
            time.sleep(0.05)
        yield LocalRouter(f"http://{LOOPBACK}:{port}", split)
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT_S)
