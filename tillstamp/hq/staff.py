"""Staff at HQ: roles, bearer tokens and who may do what.

A token is 32 random bytes (URL-safe base64 after a `tsk_` prefix) shown once; HQ keeps only its
SHA-256. A slow password hash (argon2) protects guessable secrets; a token has 256 bits of
entropy, so one fast hash is enough and keeps every API call cheap (docs/HQ.md).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

ROLES = ("owner", "marketer", "manager")
TOKEN_PREFIX = "tsk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@\-]{0,63}$")
_STORE = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


class StaffError(ValueError):
    """A user name or role that is not valid."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a staff user with a role, and a store when the role is a manager's."""

    name: str
    role: str
    store: str | None = None

    @property
    def scope(self) -> str | None:
        """The only store whose members and sales this user may see (None: every store)."""
        return self.store if self.role == "manager" else None

    @property
    def can_edit_segments(self) -> bool:
        """Owners and marketers save and delete segments; managers preview and read them."""
        return self.role in ("owner", "marketer")


def parse_role(text: str) -> tuple[str, str | None]:
    """'owner', 'marketer' or 'manager:STORE' as (role, store)."""
    role, _, store = text.partition(":")
    if role not in ROLES:
        raise StaffError(f"--role: expected owner, marketer or manager:STORE, got {text!r}")
    if role == "manager":
        if not _STORE.match(store):
            raise StaffError("--role: a manager needs a store, e.g. manager:JKT-01")
        return role, store
    if store:
        raise StaffError(f"--role: only a manager has a store, got {text!r}")
    return role, None


def check_name(name: str) -> str:
    """A user name: 1-64 letters, digits, '.', '_', '@' or '-'."""
    if not _NAME.match(name):
        raise StaffError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


def new_token() -> str:
    """A fresh bearer token (shown once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What HQ stores of a token."""
    return hashlib.sha256(token.encode()).hexdigest()
