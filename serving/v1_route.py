"""`V1PredictRoute`: answers v1 predict for ctloop predictors in front of KServe's FastAPI app.

A one-row v1 request through KServe 0.21's app spends more CPU in FastAPI than in scoring
(docs/performance.md): routing over its routes, the endpoint's dependency machinery, a dict
copy of the headers, `DataPlane.decode`/`infer`/`encode`, `Model.__call__`'s three timed
stages, and the response class. This ASGI app sits between uvicorn and KServe's app and, for
`POST /v1/models/<name>:predict` to a loaded `CtloopPredictor` with a JSON body, does only
what that request needs: read the body (which `BodyLimit` in front has already bounded),
`orjson.loads`, `CtloopPredictor.predict` (given the `X-Request-Id` header; it decodes, scores
inline or in a worker thread, and records ctloop's metrics), `orjson.dumps`, one response. KServe's
`request_predict_seconds` histogram is still observed, so dashboards built on KServe's
metrics see these requests.

Everything else goes to KServe's app unchanged: other paths and methods, other models, a
model that is not ready (KServe answers 503, or 404 once unloaded), CloudEvents (binary `ce-`
headers or a structured event in the body) and content types other than `application/json`
(with or without parameters such as `charset`). Errors keep KServe's shape: the exception
handler KServe's app registered for the error's class answers (`{"error": "..."}`: 400 for an
invalid request, 501 for NotImplementedError, 500 for anything unforeseen). A client that
disconnects before its body has arrived gets no answer.
"""

from __future__ import annotations

import time

import orjson
from kserve.errors import generic_exception_handler
from kserve.metrics import PREDICT_HIST_TIME, get_labels
from kserve.model_repository import ModelRepository
from starlette.applications import Starlette
from starlette.requests import Request

from ctloop.serving.body_limit import Receive, Scope, Send, read_body, replay
from ctloop.serving.predictor import CtloopPredictor
from ctloop.serving.request_decoding import InvalidRequest

PREFIX = "/v1/models/"
SUFFIX = ":predict"
JSON_TYPE = b"application/json"
REQUEST_ID_HEADER = b"x-request-id"
_RESPONSE_HEADERS = [(b"content-type", b"application/json")]


class V1PredictRoute:
    """ASGI app: v1 predict of ctloop predictors here, every other request to `app`."""

    def __init__(self, app: Starlette, models: ModelRepository) -> None:
        self.app = app
        self.models = models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        predictor = self._predictor(scope)
        if predictor is None:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client left before sending the whole body: nobody to answer
            return
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as error:
            invalid = InvalidRequest(f"Unrecognized request format: {error}")
            await self._answer_error(invalid, scope, receive, send)
            return
        if isinstance(payload, dict) and "specversion" in payload:  # a structured CloudEvent
            await self.app(scope, replay(body, receive), send)
            return
        started = time.perf_counter()
        try:
            response = await predictor.predict(payload, _request_id_header(scope))
        except Exception as error:  # noqa: BLE001 - answered as KServe's handlers do
            # Answered inside the except block, which unbinds `error` at its end: an exception
            # kept in a local would form a cycle (its traceback holds this frame) that keeps
            # the request's payload alive until the next garbage collection.
            _observe(predictor, started)
            await self._answer_error(error, scope, receive, send)
            return
        _observe(predictor, started)
        content = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_RESPONSE_HEADERS, (b"content-length", b"%d" % len(content))],
            }
        )
        await send({"type": "http.response.body", "body": content})

    async def _answer_error(
        self, error: Exception, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer as KServe's app would: with the exception handler it registered for the
        error's class or nearest base (InvalidInput 400, NotImplementedError 501, ...)."""
        handlers = self.app.exception_handlers
        handler = next(
            (handlers[kind] for kind in type(error).__mro__ if kind in handlers),
            generic_exception_handler,
        )
        response = await handler(Request(scope, receive), error)
        await response(scope, receive, send)

    def _predictor(self, scope: Scope) -> CtloopPredictor | None:
        """The ready ctloop predictor a plain-JSON v1 predict request is for, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
            return None
        model = self.models.get_model(path[len(PREFIX) : -len(SUFFIX)])
        if not isinstance(model, CtloopPredictor) or not model.ready:
            return None
        for name, value in scope["headers"]:
            if name == b"content-type" and _media_type(value) != JSON_TYPE:
                return None
            if name.startswith(b"ce-"):  # a binary-mode CloudEvent
                return None
        return model


def _observe(predictor: CtloopPredictor, started: float) -> None:
    """KServe's predict histogram, timed as `Model.__call__` times it: every call, answered or
    not."""
    PREDICT_HIST_TIME.labels(**get_labels(predictor.name)).observe(time.perf_counter() - started)


def _request_id_header(scope: Scope) -> dict[str, str] | None:
    """The caller's `X-Request-Id`, as KServe's path would pass it to `predict`."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return {REQUEST_ID_HEADER.decode(): value.decode("latin-1")}
    return None


def _media_type(content_type: bytes) -> bytes:
    """`application/json` of `Application/JSON; charset=UTF-8`: the type without parameters.

    KServe's own path compares the whole header with a list of exact values, so it hands the
    model raw bytes for `application/json;charset=UTF-8`, which many HTTP clients send."""
    return content_type.split(b";", 1)[0].strip().lower()
