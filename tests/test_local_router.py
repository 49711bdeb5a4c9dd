"""The loopback canary router: the share it sends to the canary, what it passes through
unchanged, and its answer when a backend is down. Two pytest-httpserver backends echo what
they receive; each test costs well under a second."""

import json

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ctloop.pipelines.local_router import CANARY, PRIMARY, CanarySplit, running_router
from ctloop.serving.local_server import free_port


def _echo(name: str):
    def answer(request: Request) -> Response:
        """Echo the body; say who answered, what arrived, and answer the status asked for."""
        status = int(request.args.get("status", "200"))
        headers = {
            "X-Backend": name,
            "X-Seen-Path": request.full_path,
            "X-Seen-Length": request.headers.get("Content-Length", ""),
            "X-Seen-Request-Id": request.headers.get("X-Request-Id", ""),
        }
        return Response(request.get_data(), status=status, headers=headers)

    return answer


@pytest.fixture(scope="module")
def backends():
    servers = {}
    for name in (PRIMARY, CANARY):
        server = HTTPServer(host="127.0.0.1", port=0)
        server.expect_request("").respond_with_handler(_echo(name))
        server.start()
        servers[name] = server
    yield {name: server.url_for("").rstrip("/") for name, server in servers.items()}
    for server in servers.values():
        server.clear()
        server.stop()


@pytest.mark.parametrize("percent", [0, 1, 10, 33, 50, 100])
def test_split_gives_the_canary_its_percent_of_every_prefix_of_requests(percent):
    split = CanarySplit(percent)
    for sent in range(1, 1001):
        split.next_backend()
        # Deterministic by count: after n requests the canary has floor(n * percent / 100),
        # so it never strays a whole request from the exact share.
        assert abs(split.counts[CANARY] - sent * percent / 100) < 1
    assert split.counts[PRIMARY] + split.counts[CANARY] == 1000


def test_router_sends_the_canary_percent_of_requests_over_http(backends):
    requests, percent = 200, 10
    answered = {PRIMARY: 0, CANARY: 0}
    with running_router(backends[PRIMARY], backends[CANARY], percent) as router:
        with httpx.Client(base_url=router.url) as client:
            for _ in range(requests):
                answered[
                    client.post("/v1/models/m:predict", content=b"{}").headers["X-Backend"]
                ] += 1

    assert answered == {PRIMARY: 180, CANARY: 20}
    assert router.split.counts == answered


def test_router_passes_bodies_headers_and_statuses_through_unchanged(backends):
    body = bytes(range(256)) * 20_000  # 5 MB, every byte value: streamed both ways
    with running_router(backends[PRIMARY], backends[CANARY], 100) as router:
        answer = httpx.post(
            f"{router.url}/v2/models/m/infer?status=418&x=a%2Fb",
            content=body,
            headers={"X-Request-Id": "req-7", "Content-Type": "application/octet-stream"},
        )
        bad = httpx.post(f"{router.url}/v1/models/m:predict?status=400", content=b'{"x": 1}')

    assert answer.status_code == 418
    assert answer.content == body
    assert answer.headers["X-Backend"] == CANARY
    assert answer.headers["X-Seen-Path"] == "/v2/models/m/infer?status=418&x=a%2Fb"
    assert answer.headers["X-Seen-Length"] == str(len(body))
    assert answer.headers["X-Seen-Request-Id"] == "req-7"
    assert (bad.status_code, bad.content) == (400, b'{"x": 1}')


def test_router_answers_502_naming_the_backend_that_does_not_answer(backends):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_router(backends[PRIMARY], dead, 50) as router:
        with httpx.Client(base_url=router.url) as client:
            answers = [client.post("/v1/models/m:predict", content=b"{}") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [200, 502, 200, 502]
    error = json.loads(answers[1].content)["error"]
    assert error.startswith(f"canary backend {dead} did not answer: ConnectError")


@pytest.mark.parametrize("percent", [-1, 101, 10.5, "10", True])
def test_split_refuses_a_percent_that_is_not_an_integer_from_0_to_100(percent):
    with pytest.raises(ValueError, match="canary percent must be"):
        CanarySplit(percent)
