"""`V1PredictRoute` driven in-process over ASGI: the edges an HTTP client cannot easily reach
(a body in several chunks, a client that leaves mid-body, failures other than a bad request),
answered as KServe's own app answers them."""

import asyncio
import json

import pytest
from fastapi import FastAPI
from kserve.model_repository import ModelRepository
from kserve.protocol.rest.server import RESTServer

from ctloop.components.table_io import read_table
from ctloop.serving.predictor import CtloopPredictor
from ctloop.serving.v1_route import V1PredictRoute
from tests.served_model import train_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, telco_churn_parquet):
    folder = tmp_path_factory.mktemp("route") / "churn"
    profile, features = train_model_folder(folder, read_table(str(telco_churn_parquet)))
    rows = features.slice(0, 2).to_pylist()
    return folder, [[row[name] for name in profile["feature_order"]] for row in rows]


class _Failing(CtloopPredictor):
    def __init__(self, *args, failure: Exception, **kwargs):
        super().__init__(*args, **kwargs)
        self.failure = failure

    async def predict(self, payload, headers=None, response_headers=None):
        raise self.failure


def _route(predictor: CtloopPredictor) -> tuple[V1PredictRoute, list[str]]:
    """The route in front of an app with KServe's exception handlers; the app records the
    paths that reach it."""
    app = FastAPI()
    RESTServer._add_exception_handlers(RESTServer.__new__(RESTServer), app)
    reached: list[str] = []

    @app.post("/{rest:path}")
    async def record(rest: str):
        reached.append(rest)
        return {"kserve": True}

    predictor.load()
    models = ModelRepository(models_dir="/nonexistent")
    models.update(predictor)
    return V1PredictRoute(app, models), reached


def _call(route: V1PredictRoute, chunks: list[bytes], *, disconnect: bool = False) -> list[dict]:
    """POST `chunks` as the body of a v1 predict request; return the messages sent back."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1 or disconnect}
        for index, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages.append({"type": "http.disconnect"})
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/churn:predict",
        "raw_path": b"/v1/models/churn:predict",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(route(scope, receive, send))
    return sent


def _status_and_body(sent: list[dict]) -> tuple[int, dict]:
    body = b"".join(message.get("body", b"") for message in sent[1:])
    return sent[0]["status"], json.loads(body)


def test_a_body_in_several_chunks_is_scored_whole(model_dir):
    route, reached = _route(CtloopPredictor("churn", model_dir[0], version="4"))
    body = json.dumps({"instances": model_dir[1]}).encode()

    status, answer = _status_and_body(_call(route, [body[:10], body[10:50], body[50:]]))

    assert status == 200 and answer["model_version"] == "4"
    assert len(answer["predictions"]) == 2
    assert reached == []  # answered by the route, not KServe's app


def test_a_client_that_leaves_mid_body_gets_no_answer_and_nothing_is_scored(model_dir):
    predictor = _Failing("churn", model_dir[0], failure=AssertionError("scored"))
    route, reached = _route(predictor)

    assert _call(route, [b'{"instances": [[1, 2'], disconnect=True) == []
    assert reached == []


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        (NotImplementedError("no explain"), 501, "no explain"),
        (RuntimeError("boom"), 500, "RuntimeError : boom"),
    ],
)
def test_a_failure_is_answered_by_kserves_handler_for_its_class(
    model_dir, failure, status, message
):
    route, _ = _route(_Failing("churn", model_dir[0], failure=failure))
    body = json.dumps({"instances": model_dir[1]}).encode()

    answered, answer = _status_and_body(_call(route, [body]))

    assert answered == status
    assert message in answer["error"]
