"""The one network seam: a `Transport` sends bytes and returns a `Reply`, or raises Offline /
TimedOut. `check` turns an error status into the error tree of `errors` (the only place
HTTP statuses are interpreted). Two transports: `RequestsTransport` over real HTTP(S), with
TLS verification always on and a hard per-request deadline; `InProcessTransport`, which
calls the HQ ASGI app directly, for tests without sockets.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
import urllib3.exceptions

from . import errors
from .protocol import H_HQ_TIME


@dataclass(frozen=True)
class Reply:
    """An HTTP answer, fully read."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        """A header, case-insensitively."""
        low = name.lower()
        for k, v in self.headers.items():
            if k.lower() == low:
                return v
        return None

    @property
    def hq_time(self) -> dt.datetime | None:
        """HQ's clock when it answered, if it said."""
        raw = self.header(H_HQ_TIME)
        if raw is None or not raw.isdigit():
            return None
        return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC)


class Transport(Protocol):
    """Sends one request to HQ."""

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Send and read the whole answer; raise Offline or TimedOut when there is none."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def check(reply: Reply) -> Reply:
    """The reply when it is a success; else the matching SyncError is raised."""
    if reply.status < 400:
        return reply
    code, message, expected = "http_error", reply.body[:200].decode(errors="replace"), None
    try:
        data = reply.json()
        if isinstance(data, dict) and "error" in data:
            code, message, expected = data["error"], data.get("message", ""), data.get("expected")
    except ValueError:
        pass  # not our JSON (a proxy's error page): keep the text
    raise errors.from_status(reply.status, code, message, expected=expected,
                             retry_after=retry_after(reply.header("Retry-After")))


class RequestsTransport:
    """HTTP(S) with requests; `timeout` is a hard limit on the whole request."""

    def __init__(self, base_url: str, *, timeout: float = 30.0, ca_bundle: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        # TLS verification is never turned off; a private CA is given as a bundle path.
        self.session.verify = ca_bundle or True

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Send one request and read the answer before the deadline."""
        deadline = time.monotonic() + self.timeout
        try:
            resp = self.session.request(method, self.base_url + path, data=body or None, headers=dict(headers or {}),
                                        timeout=(min(5.0, self.timeout), self.timeout), stream=True,
                                        allow_redirects=False)
            chunks = []
            with resp:
                for chunk in resp.raw.stream(65536, decode_content=True):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise errors.TimedOut(f"{method} {path}: no complete answer in {self.timeout:g}s")
        except (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError) as e:
            raise errors.TimedOut(f"{method} {path}: timed out ({e.__class__.__name__})") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            # Refused, reset, cut mid-body, TLS failure: all mean "HQ is not reachable now".
            raise errors.Offline(f"{method} {path}: {e.__class__.__name__}") from None
        body = b"".join(chunks)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and "Content-Encoding" not in resp.headers \
                and int(length) != len(body):  # the connection was cut mid-answer
            raise errors.Offline(f"{method} {path}: answer cut after {len(body)} of {length} bytes")
        return Reply(resp.status_code, body, dict(resp.headers))

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


class InProcessTransport:
    """Calls the HQ ASGI app in this process (httpx's ASGI transport on a private event loop)."""

    def __init__(self, app: Any):
        import anyio.from_thread
        import httpx

        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hq.test")

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        """Hand the request to the app and return its answer."""

        async def call() -> Reply:
            resp = await self._client.request(method, path, content=body or None, headers=dict(headers or {}))
            return Reply(resp.status_code, resp.content, dict(resp.headers))

        return self._portal.call(call)

    def close(self) -> None:
        """Stop the private event loop."""
        self._portal.call(self._client.aclose)
        self._portal_cm.__exit__(None, None, None)
