"""Signed one-click unsubscribe links (RFC 8058): `{public_url}/v1/unsubscribe/{token}` where
the token names the member and the channel and carries an HMAC-SHA256 tag made with the secret
from hq.toml's `unsubscribe_secret_env`. Nobody can forge a link for another member, and a
link keeps working (an unsubscribe must not expire)."""

from __future__ import annotations

import base64
import hashlib
import hmac


class BadToken(ValueError):
    """An unsubscribe token that is malformed or not signed by this HQ."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, member: str, channel: str) -> str:
    """A token for (member, channel)."""
    body = f"{member}\x1f{channel}".encode()
    tag = hmac.new(secret, b"unsubscribe\x1f" + body, hashlib.sha256).digest()[:16]
    return f"{_b64(body)}.{_b64(tag)}"


def read_token(secret: bytes, token: str) -> tuple[str, str]:
    """(member, channel) of a token; BadToken if it does not verify."""
    try:
        body_text, tag_text = token.split(".", 1)
        body, tag = _unb64(body_text), _unb64(tag_text)
        member, channel = body.decode().split("\x1f", 1)
    except (ValueError, UnicodeDecodeError):
        raise BadToken("malformed unsubscribe link") from None
    want = hmac.new(secret, b"unsubscribe\x1f" + body, hashlib.sha256).digest()[:16]
    if not secret or not hmac.compare_digest(want, tag):
        raise BadToken("unsubscribe link is not signed by this head office")
    return member, channel


def unsubscribe_url(public_url: str, secret: bytes, member: str, channel: str = "email") -> str:
    """The full one-click URL."""
    return f"{public_url}/v1/unsubscribe/{make_token(secret, member, channel)}"
