"""`BodyLimit`: request bodies over the server's limit get HTTP 413 before they are read, and
the memory a large body cost goes back to the operating system once it is answered.

Every request passes through this ASGI app, in front of `V1PredictRoute` and KServe's app, so
the limit holds on every path (v1, v2, CloudEvents) and with or without request logs. Without
it, a 200 MB body is read, parsed and then refused for its row count, and the process holds
over a gigabyte afterwards (docs/performance.md).

- A body that declares its size (`Content-Length`) is refused on its headers: nothing of it
  is read. uvicorn reads what the client still sends and drops it, so a client that sends the
  whole body first still gets the answer on an open connection, and one that waits for
  `100 Continue` sends nothing.
- A chunked body (`Transfer-Encoding: chunked`, no size) is read here, and refused as soon as
  more than the limit has arrived; one within the limit is handed on whole.
- After a request with a body of at least `TRIM_AFTER_BYTES`, once no such request is still
  being handled, `release_memory` hands the free memory of the C heap back to the OS. Decoding
  a large JSON body allocates many times its size (Python objects, then the float32 matrix)
  and frees it again, but glibc keeps freed memory of its heaps for reuse, and after one
  large allocation it raises its mmap threshold so that later ones come from the heaps too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TRIM_AFTER_BYTES = 1 << 20
"""Bodies from 1 MiB up (about 4,000 rows of 30 features as JSON lists) are followed by
`release_memory`; below that, what decoding allocates stays small enough to keep for the
next request (the cost and the memory returned: docs/performance.md)."""


class BodyTooLarge(Exception):
    """More than the limit of a chunked body has arrived."""


class BodyLimit:
    """ASGI app: refuse bodies over `max_body_bytes` with 413, pass the rest to `app`."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, *, trim_after_bytes: int = TRIM_AFTER_BYTES
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes = {max_body_bytes} must be >= 1")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trim_after_bytes = trim_after_bytes
        self._large_in_flight = 0  # changed on the event loop only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _declared_body(scope["headers"])
        if length is not None and length > self.max_body_bytes:
            await self._refuse(send, f"request body of {length} bytes")
            return
        if chunked:
            try:
                body = await read_body(receive, self.max_body_bytes)
            except BodyTooLarge:
                await self._refuse(send, "chunked request body")
                return
            if body is None:  # the client left before the end of its body
                return
            length, receive = len(body), replay(body, receive)
        if length is None or length < self.trim_after_bytes:
            await self.app(scope, receive, send)
            return
        self._large_in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._large_in_flight -= 1
            if self._large_in_flight == 0:
                release_memory()

    async def _refuse(self, send: Send, what: str) -> None:
        content = orjson.dumps(
            {
                "error": f"{what} is over this server's limit of {self.max_body_bytes} bytes "
                "(--max-body-bytes); send fewer rows per request"
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(content)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


def _declared_body(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(Content-Length, whether the body is chunked) from the request's headers; uvicorn's
    parser has already refused a request with a malformed or conflicting Content-Length."""
    length, chunked = None, False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked


async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The request body; None when the client disconnects before its end.

    Raises:
        BodyTooLarge: more than `limit` bytes have arrived (the rest is left unread).
    """
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands `body` to the next app as if it had not been read, then
    passes on what the connection sends (a disconnect)."""
    replayed = False

    async def replaying() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Hand the free pages of every glibc heap back to the OS (`malloc_trim(0)`); a no-op
    without glibc."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
