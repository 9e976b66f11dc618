"""HQ never holds an oversized or unauthenticated body: a Content-Length over the limit or a
request without the terminal's headers is refused before the body is read, and a chunked
body is cut off at the limit (counted at the ASGI receive, the bytes HQ actually takes in)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tillstamp.sync import protocol as p

from .conftest import T0, HqHarness
from .live import serve

LIMIT = p.MAX_BODY_BYTES
CHUNK = 64 * 1024


class Counted:
    """An ASGI request whose body is handed out in chunks, counting what the app took."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.taken = 0

    async def receive(self) -> dict[str, Any]:
        n = min(CHUNK, self.total - self.taken)
        self.taken += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.taken < self.total}


def _call(app: Any, headers: dict[str, str], body: Counted,
          path: str = "/v1/push") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "server": ("hq.test", 80), "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, body.receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(raw)


def _signed_headers(hq: HqHarness, tmp_path: Path) -> dict[str, str]:
    h = hq.till(tmp_path, "a", "S1")
    return {**p.sign_request(h.till.keys.terminal, h.till.config.terminal, "POST", "/v1/push", b"x",
                             int(T0.timestamp() * 1000)), "Content-Type": "application/json"}


def test_an_oversized_content_length_is_refused_before_reading(hq: HqHarness, tmp_path: Path) -> None:
    body = Counted(400 * 1024 * 1024)
    status, answer = _call(hq.app, {**_signed_headers(hq, tmp_path), "Content-Length": str(body.total)},
                           body)
    assert (status, answer["error"]) == (413, "too_large") and body.taken == 0


def test_an_unsigned_push_is_refused_before_reading(hq: HqHarness) -> None:
    body = Counted(LIMIT // 2)
    status, answer = _call(hq.app, {"Content-Length": str(body.total)}, body)
    assert (status, answer["error"]) == (401, "unsigned") and body.taken == 0
    body = Counted(LIMIT // 2)
    status, answer = _call(hq.app, {"X-Tillstamp-Terminal": "T-NOBODY", "X-Tillstamp-Time": "1",
                                    "X-Tillstamp-Nonce": "n" * 16, "X-Tillstamp-Signature": "AA"}, body)
    assert (status, answer["error"]) == (401, "unknown_terminal") and body.taken == 0


def test_a_chunked_body_is_cut_off_at_the_limit(hq: HqHarness, tmp_path: Path) -> None:
    body = Counted(50 * LIMIT)  # no Content-Length: Transfer-Encoding chunked
    status, answer = _call(hq.app, {**_signed_headers(hq, tmp_path), "Transfer-Encoding": "chunked"},
                           body)
    assert (status, answer["error"]) == (413, "too_large")
    assert body.taken <= LIMIT + CHUNK  # never more than the limit and the chunk that crossed it


def test_enrol_bodies_are_limited_too(hq: HqHarness) -> None:
    body = Counted(5 * LIMIT)  # enrolment is unsigned: the limit alone protects it
    status, _ = _call(hq.app, {"Content-Type": "application/json"}, body, path="/v1/enroll")
    assert status == 413 and body.taken <= LIMIT + CHUNK


@pytest.mark.parametrize("headers", [
    "Content-Length: 419430400\r\n",  # 400 MB declared, none sent
    "Content-Length: 1000\r\n",  # small, but unsigned: refused without waiting for the body
])
def test_over_real_http_the_refusal_comes_without_sending_the_body(hq: HqHarness, headers: str) -> None:
    with serve(hq.app) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"POST /v1/push HTTP/1.1\r\nHost: hq\r\n{headers}Content-Type: application/json"
                      "\r\n\r\n".encode())
            reply = b""
            while b"\r\n\r\n" not in reply:
                part = s.recv(4096)
                if not part:
                    break
                reply += part
    status = int(reply.split(b" ", 2)[1])
    assert status in (401, 413)
