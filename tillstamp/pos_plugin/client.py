"""A small Python client of the POS API (requests), for Python POS software and the tests.

    from tillstamp.pos_plugin.client import TillClient
    till = TillClient("http://127.0.0.1:8765")
    result = till.record_sale({"receipt": "R-1", "member": "@scan", "lines": [...], "total": 50000})
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import requests


class TillError(Exception):
    """The agent refused a request: `status`, stable `code` and the agent's `message`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class TillClient:
    """Calls the agent's POS API; every refusal raises TillError."""

    def __init__(self, url: str = "http://127.0.0.1:8765", *, api_key: str | None = None,
                 timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # The agent is on this machine: an HTTP(S)_PROXY meant for the internet must not
            # catch loopback calls, and requests would look proxies and .netrc up per request.
            session.trust_env = urlsplit(self.url).hostname not in ("127.0.0.1", "localhost", "::1")
        self.session = session
        if api_key:
            self.session.headers["X-API-Key"] = api_key

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {}
            raise TillError(r.status_code, body.get("error", "http_error"),
                            body.get("message", r.text[:200]), body.get("details"))
        return r.json()

    def health(self) -> dict[str, Any]:
        """Devices, print queue and outbox."""
        return self._call("GET", "/health")

    def record_sale(self, sale: dict[str, Any]) -> dict[str, Any]:
        """Record a sale; `member` may be a card payload, phone, member id or '@scan'."""
        return self._call("POST", "/v1/sales", json=sale)

    def refund(self, receipt: str, lines: dict[str, int] | None = None) -> dict[str, Any]:
        """Refund a sale in full, or the given {SKU: qty}."""
        body = {"lines": lines} if lines else None
        return self._call("POST", f"/v1/sales/{quote(receipt, safe='')}/refund", json=body)

    def find_member(self, phone: str) -> dict[str, Any]:
        """The member with this phone number."""
        return self._call("GET", "/v1/members", params={"phone": phone})

    def member(self, member_id: str) -> dict[str, Any]:
        """A member's view: balance, tier, card, missions, rewards."""
        return self._call("GET", f"/v1/members/{quote(member_id, safe='')}")

    def enroll(self, phone: str, name: str | None = None, *, email: str | None = None,
               birthday: str | None = None, consent: list[str] | None = None) -> dict[str, Any]:
        """Enrol a member; the answer's `member` is their id."""
        body = {k: v for k, v in {"phone": phone, "name": name, "email": email, "birthday": birthday,
                                   "consent": consent or []}.items() if v is not None}
        return self._call("POST", "/v1/members", json=body)

    def rewards(self, member: str | None = None) -> list[dict[str, Any]]:
        """The catalogue; with `member`, each entry says `can_redeem`."""
        return self._call("GET", "/v1/rewards", params={"member": member} if member else None)

    def redeem(self, member: str, reward: str) -> dict[str, Any]:
        """Redeem a reward for a member."""
        return self._call("POST", "/v1/redemptions", json={"member": member, "reward": reward})

    def claim(self, payload: str, member: str) -> dict[str, Any]:
        """Claim a receipt QR's stamps for a member."""
        return self._call("POST", "/v1/claims", json={"payload": payload, "member": member})

    def reprint(self, receipt: str) -> dict[str, Any]:
        """Queue a recorded sale's receipt again."""
        return self._call("POST", f"/v1/print/{quote(receipt, safe='')}")

    def events(self, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Server-sent events as dicts, until the stream ends (or the read times out)."""
        with self.session.get(self.url + "/v1/events", stream=True, timeout=timeout,
                              headers={"Accept": "text/event-stream"}) as r:
            r.raise_for_status()
            for raw in r.iter_lines(chunk_size=1, decode_unicode=True):
                if isinstance(raw, str) and raw.startswith("data:"):
                    yield json.loads(raw[5:].strip())
