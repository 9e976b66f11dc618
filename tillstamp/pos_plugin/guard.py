"""Who may talk to the POS API: a pure ASGI middleware in front of every route.

A web page the cashier happens to open can reach `127.0.0.1:8765` too. Two attacks matter:

- **DNS rebinding**: a page on `evil.example` re-points its name to 127.0.0.1 and then reads
  the API as a same-origin site. The browser still sends `Host: evil.example:8765`, so the
  `Host` header must name an address this server serves. An IP literal cannot be rebound,
  so on a wildcard bind (`0.0.0.0`, keyed) any IP literal is accepted; names must be
  loopback names, the machine's own name or one listed in `[api] hosts`.
- **Cross-site requests**: a form on any site can POST to the till (no CORS preflight for
  form types). Every state-changing request must come from no browser page at all (no
  `Origin`) or from the panel itself (`Origin` equal to this server), and carry JSON
  (`Content-Type: application/json`) when it has a body: a form cannot send that type
  cross-site without a preflight, which this server never grants.

Refusals are JSON like every other error of the API, and nothing reaches the handlers.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_READ = frozenset({b"host", b"origin", b"sec-fetch-site", b"content-type", b"content-length",
                   b"transfer-encoding", b"x-api-key", b"cookie"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# The documentation of the API describes it in full (every route, the device URLs in
# examples): with a key required, it is as private as the API itself.
DOC_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower-case, without port or IPv6 brackets."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> tuple[frozenset[str], bool]:
    """(names a Host header may carry, whether any IP literal is fine) for a bind address."""
    names = set(LOOPBACK_NAMES) | {h.lower().rstrip(".") for h in extra if h}
    bind = bind_host.lower()
    wildcard = bind in ("0.0.0.0", "::", "")
    if wildcard:
        names.add(socket.gethostname().lower())
    elif bind not in names:
        names.add(bind)
    return frozenset(names), wildcard


class RequestGuard:
    """ASGI middleware: Host allow-list, same-origin writes with JSON bodies, keyed docs."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str], any_ip: bool = False,
                 key_check: Callable[[dict[str, str]], bool] | None = None) -> None:
        self.app = app
        self.hosts = hosts
        self.any_ip = any_ip
        self.key_check = key_check
        self._hosts_seen: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only the few headers the checks read are decoded: this runs before every request.
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _READ}
        refusal = self.refusal(scope["method"], scope["path"], headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        body = json.dumps({"error": code, "message": message}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        """(status, code, message) when the request must not reach the API, else None."""
        host = headers.get("host", "")
        ok = self._hosts_seen.get(host)
        if ok is None:
            name = host_name(host)
            ok = name in self.hosts or (self.any_ip and _is_ip(name))
            if len(self._hosts_seen) < 64:  # a till sees a handful of Host values; bounded anyway
                self._hosts_seen[host] = ok
        if not ok:
            return 421, "unknown_host", f"Host {host!r} is not an address of this till"
        if path in DOC_PATHS and self.key_check is not None and not self.key_check(headers):
            return 401, "unauthorized", "send the till's API key in the X-API-Key header"
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in (f"http://{host.lower()}",
                                                                      f"https://{host.lower()}"):
            return 403, "cross_origin", f"requests from {origin!r} may not change the till"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross_origin", "cross-site requests may not change the till"
        ctype = headers.get("content-type")
        has_body = headers.get("content-length", "0") not in ("0", "") or "transfer-encoding" in headers
        if ctype is not None and ctype.split(";", 1)[0].strip().lower() != "application/json":
            return 415, "json_only", f"send JSON (Content-Type: application/json), not {ctype!r}"
        if has_body and ctype is None:
            return 415, "json_only", "send JSON (Content-Type: application/json)"
        return None


def key_checker(api_key: str, header: str, cookie: str) -> Callable[[dict[str, str]], bool]:
    """A check of the API key in `header` or the `cookie` of a header dict."""
    if header.lower().encode() not in _READ:  # the guard decodes only the headers it reads
        raise ValueError(f"the guard does not read the {header} header")

    def check(headers: dict[str, str]) -> bool:
        given = headers.get(header.lower(), "")
        if not given:
            for part in headers.get("cookie", "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == cookie:
                    given = v
        return hmac.compare_digest(given.encode(), api_key.encode())

    return check
