"""Who is at the browser: staff passwords (argon2), sessions, CSRF tokens and rate limits.

A session cookie is 32 random bytes; HQ keeps only its SHA-256 with the session's CSRF token,
so a copy of the database opens no session. Every form carries the CSRF token of its
session (double submit is not enough when a sibling subdomain can set cookies).
Rate limits are counted in the serving process: one `hq serve` process is the deployment
this is written for (docs/DASHBOARD.md).
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..staff import Principal
from . import store_web

STAFF_TTL = dt.timedelta(hours=12)
MEMBER_TTL = dt.timedelta(hours=2)
MIN_PASSWORD = 10

_hasher = PasswordHasher()


class PasswordError(ValueError):
    """A password that is too short to be set."""


def hash_password(password: str) -> str:
    """An argon2id hash of a password; PasswordError when it is shorter than MIN_PASSWORD."""
    if len(password) < MIN_PASSWORD:
        raise PasswordError(f"password: use at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches the hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verifying against this when a user does not exist keeps "no such user" as slow as "wrong password".
_DUMMY = _hasher.hash("not a password of anyone")


def digest(secret: str) -> str:
    """What HQ keeps of a cookie or a code."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class WebSession:
    """A live browser session: a staff user or a customer (by phone), and its CSRF token."""

    kind: str
    subject: str
    csrf: str


class RateLimiter:
    """At most `limit` hits per key in any `window` (a sliding window, counted in memory)."""

    def __init__(self, limit: int, window: dt.timedelta, clock: Callable[[], dt.datetime]):
        self.limit = limit
        self.window = window
        self.clock = clock
        self._hits: dict[str, collections.deque[dt.datetime]] = {}

    def allow(self, key: str) -> bool:
        """Count a hit for `key`; False (and not counted) once the window is full."""
        now = self.clock()
        q = self._hits.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return False
        q.append(now)
        if len(self._hits) > 100_000:  # a flood of distinct keys must not grow memory forever
            self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
        return True


class Auth:
    """Sessions and staff logins over an HQ store."""

    def __init__(self, store: object, clock: Callable[[], dt.datetime]):
        self.store = store
        self.clock = clock

    def login(self, name: str, password: str) -> Principal | None:
        """The staff user if the password is theirs."""
        row = store_web.login_of(self.store, name)
        if row is None:
            verify_password(_DUMMY, password)
            return None
        if not verify_password(row.password_hash, password):
            return None
        return Principal(row.name, row.role, row.store)

    def start(self, kind: str, subject: str) -> tuple[str, WebSession]:
        """A new session: (cookie value, session)."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = self.clock()
        ttl = STAFF_TTL if kind == "staff" else MEMBER_TTL
        store_web.create_session(self.store, digest(cookie), kind, subject, csrf, now, now + ttl)
        return cookie, WebSession(kind, subject, csrf)

    def session(self, cookie: str | None, kind: str) -> WebSession | None:
        """The live session of this kind a cookie opens."""
        if not cookie or len(cookie) > 100:
            return None
        row = store_web.session(self.store, digest(cookie), self.clock())
        if row is None or row.kind != kind:
            return None
        return WebSession(row.kind, row.subject, row.csrf)

    def principal(self, s: WebSession) -> Principal | None:
        """The staff user of a staff session, as they are now (a disabled user has none)."""
        got = store_web.staff_user(self.store, s.subject)
        return Principal(s.subject, got[0], got[1]) if got else None

    def end(self, cookie: str | None) -> None:
        """Log out."""
        if cookie:
            store_web.delete_session(self.store, digest(cookie))
