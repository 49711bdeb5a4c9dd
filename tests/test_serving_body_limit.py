"""`BodyLimit` driven in-process over ASGI: what it reads of a body it refuses (nothing, or no
more than the limit), what it hands on, and when it gives memory back."""

import asyncio
import json

import pytest

from ctloop.serving import body_limit
from ctloop.serving.body_limit import BodyLimit


class _Recorder:
    """The app behind the limit: reads the whole body and answers 200 with its size."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.bodies.append(b"".join(chunks))
        await asyncio.sleep(0)  # let other requests in meanwhile, as scoring would
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(self.bodies[-1])})


def _request(headers: list[tuple[bytes, bytes]], chunks: list[bytes]):
    """(scope, receive, the chunks received so far, the messages sent) of a POST."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    received: list[bytes] = []
    sent: list[dict] = []

    async def receive():
        if not pending:
            return {"type": "http.disconnect"}
        message = pending.pop(0)
        received.append(message["body"])
        return message

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": headers}
    return scope, receive, received, sent


def _run(limit: BodyLimit, scope, receive, sent) -> tuple[int, dict | bytes]:
    asyncio.run(limit(scope, receive, lambda message: _append(sent, message)))
    body = b"".join(message.get("body", b"") for message in sent[1:])
    status = sent[0]["status"]
    return status, json.loads(body) if status == 413 else body


async def _append(sent, message):
    sent.append(message)


def test_a_declared_body_over_the_limit_is_refused_without_reading_any_of_it():
    app = _Recorder()
    scope, receive, received, sent = _request([(b"content-length", b"1001")], [b"x" * 1001])

    status, answer = _run(BodyLimit(app, 1000), scope, receive, sent)

    assert status == 413
    assert (
        "request body of 1001 bytes is over this server's limit of 1000 bytes" in (answer["error"])
    )
    assert received == [] and app.bodies == []  # not a byte read, nothing handed on


def test_a_chunked_body_is_refused_once_the_limit_is_passed_and_no_later():
    app = _Recorder()
    chunks = [b"x" * 400] * 5  # the limit is passed in the third chunk
    scope, receive, received, sent = _request([(b"transfer-encoding", b"chunked")], chunks)

    status, answer = _run(BodyLimit(app, 1000), scope, receive, sent)

    assert status == 413 and "chunked request body is over" in answer["error"]
    assert len(received) == 3 and app.bodies == []


@pytest.mark.parametrize(
    "headers",
    [[(b"content-length", b"1000")], [(b"transfer-encoding", b"chunked")]],
    ids=["declared", "chunked"],
)
def test_a_body_at_the_limit_is_handed_on_whole(headers):
    app = _Recorder()
    scope, receive, _, sent = _request(headers, [b"x" * 600, b"y" * 400])

    status, answer = _run(BodyLimit(app, 1000), scope, receive, sent)

    assert (status, answer) == (200, b"1000")
    assert app.bodies == [b"x" * 600 + b"y" * 400]


def test_memory_is_released_once_the_last_large_request_is_answered(monkeypatch):
    releases: list[int] = []
    limit = BodyLimit(_Recorder(), 10_000, trim_after_bytes=1000)
    monkeypatch.setattr(body_limit, "release_memory", lambda: releases.append(len(releases)))

    async def requests():
        large = [_request([(b"content-length", b"2000")], [b"x" * 2000]) for _ in range(2)]
        small = _request([(b"content-length", b"10")], [b"x" * 10])
        await asyncio.gather(
            *(
                limit(scope, receive, lambda m, s=sent: _append(s, m))
                for scope, receive, _, sent in large
            )
        )
        assert releases == [0]  # once, after both large ones
        scope, receive, _, sent = small
        await limit(scope, receive, lambda m: _append(sent, m))

    asyncio.run(requests())
    assert releases == [0]  # a small body costs no release
