"""A request body limit for head office, enforced while the body streams in.

An unauthenticated client sent 400 MB and HQ read all of it before refusing it (memory grew
from 101 MB to 920 MB). `BodyLimit` is a pure ASGI middleware: a `Content-Length` above the
limit is answered 413 before a byte of the body is read, and a chunked body is counted as it
is received and cut off at the limit, so no request makes HQ hold more than `limit` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """The request body is larger than the limit (413).

    An HTTPException so that FastAPI, reading a JSON body for a route, lets it through as it
    is instead of calling it "an error parsing the body" (400).
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def refusal(status: int, code: str, message: str,
            headers: list[tuple[bytes, bytes]] | None = None) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON error answer."""
    body = json.dumps({"error": code, "message": message, "expected": None}).encode()
    return ({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or [])]},
            {"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: refuse bodies above `limit` bytes on Content-Length, or as they stream.

    It also adds `extra_headers()` to every answer (HQ's clock): one pure ASGI layer instead
    of a Starlette `BaseHTTPMiddleware`, which runs the app in a task group and would turn
    the limit's exception into an ExceptionGroup no handler matches.
    """

    def __init__(self, app: ASGIApp, *, limit: int,
                 extra_headers: Callable[[], list[tuple[bytes, bytes]]] = list) -> None:
        self.app = app
        self.limit = limit
        self.extra_headers = extra_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(declared) > self.limit:
                await self._refuse(send, 413, "too_large", f"body of {int(declared)} bytes is over "
                                                           f"the limit of {self.limit} bytes")
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"body is over the limit of {self.limit} bytes")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *self.extra_headers()]}
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as e:
            if started:
                raise
            await self._refuse(send, 413, "too_large", str(e))

    async def _refuse(self, send: Send, status: int, code: str, message: str) -> None:
        start, body = refusal(status, code, message, self.extra_headers())
        await send(start)
        await send(body)
