"""What the two HTTP channels share: one POST with a bearer token, its failures sorted into
NotSent / Rejected / MaybeSent (see the package's docstring)."""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from . import MaybeSent, NotSent, Rejected


class Sessions:
    """One `requests.Session` (one keep-alive connection) per sending thread: a Session is not
    promised to be thread-safe, and one connection per thread lets calls overlap."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        """This thread's session (made on first use)."""
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            # Proxies and the CA bundle are read from the environment once per session, not on
            # every request: requests' per-request lookup was a third of its cost per message.
            s.proxies.update(requests.utils.get_environ_proxies(self.url))
            s.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            s.trust_env = False
            with self._lock:
                self._all.append(s)
        return s

    def close(self) -> None:
        """Close every thread's session."""
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()
        self._local = threading.local()


def post_json(session: requests.Session, url: str, token: str, body: dict[str, Any],
              timeout_s: float) -> tuple[int, Any]:
    """POST JSON; (status, parsed body) for a 2xx, else one of the channel errors."""
    try:
        r = session.post(url, json=body, headers={"Authorization": f"Bearer {token}"},
                         timeout=(min(timeout_s, 5.0), timeout_s))
    except requests.exceptions.ConnectTimeout as e:
        raise NotSent(f"connect timeout: {e}") from None
    except requests.exceptions.ConnectionError as e:
        # A refused or unresolvable connection never carried the request; anything later may have.
        reason = getattr(e.args[0], "reason", None) if e.args else None
        if isinstance(reason, NewConnectionError):  # NameResolutionError is one too
            raise NotSent(f"cannot connect: {type(reason).__name__}") from None
        raise MaybeSent(f"connection lost after sending: {type(e).__name__}") from None
    except requests.exceptions.Timeout:
        raise MaybeSent("no answer in time (read timeout)") from None
    try:
        data = r.json()
    except ValueError:
        data = None
    if 200 <= r.status_code < 300:
        return r.status_code, data
    err = data.get("error") if isinstance(data, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    message = err.get("message") if isinstance(err, dict) else r.text[:200]
    if r.status_code == 429:
        raise NotSent(f"rate limited (429): {message}", code)
    if 400 <= r.status_code < 500:
        raise Rejected(f"refused ({r.status_code}): {message}", code)
    raise MaybeSent(f"server error ({r.status_code}): {message}", code)
