"""Signed QR tokens: member cards (signed by the member-signing key) and receipt claims
(signed by the terminal that printed the receipt). Ed25519 via `cryptography`.

Wire form, uppercase base32 without padding so a QR can use alphanumeric mode:

    member card:   TS1M<base32(key_id:4 | member:16 | issued:u32 | expires:u32 | sig:64)>
    receipt claim: <claim url>TS1C<base32(store | terminal | receipt | stamps:u16 |
                   issued:u32 | expires:u32 | sig:64)>   (texts are u8-length-prefixed UTF-8)

Times are whole seconds since the Unix epoch; `expires` 0 means never. The signature
covers the version prefix and every byte before it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from ulid import ULID

MEMBER_PREFIX = "TS1M"
CLAIM_PREFIX = "TS1C"
SIG_LEN = 64
MAX_TOKEN_LEN = 512


class TokenError(ValueError):
    """A token that is refused; `reason` is one of the REASONS codes."""

    REASONS = (
        "unknown_version",
        "malformed",
        "bad_signature",
        "unknown_key",
        "expired",
        "revoked",
        "already_claimed",
    )

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class MemberToken:
    """A verified member card."""

    member: str
    issued: dt.datetime
    expires: dt.datetime | None
    key_id: str


@dataclass(frozen=True)
class ClaimToken:
    """A verified receipt claim: a sale without a member, worth `stamps` to whoever claims it."""

    store: str
    terminal: str
    receipt: str
    stamps: int
    issued: dt.datetime
    expires: dt.datetime
    token_id: str  # the same for every copy of this claim, so it can be claimed once


def key_id(public: Ed25519PublicKey) -> str:
    """Short id of a public key: 8 hex characters of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:8]


def public_bytes(public: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_from_bytes(raw: bytes) -> Ed25519PublicKey:
    """A public key from its 32 raw bytes."""
    return Ed25519PublicKey.from_public_bytes(raw)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    pad = "=" * (-len(text) % 8)
    try:
        return base64.b32decode(text.upper() + pad)
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "token: not valid base32") from None


def _secs(t: dt.datetime | None) -> int:
    return 0 if t is None else int(t.timestamp())


def _time(s: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(s, dt.UTC)


def sign_member(private: Ed25519PrivateKey, member: str, issued: dt.datetime, expires: dt.datetime | None = None) -> str:
    """A member-card token for `member` (a ULID), signed with the member-signing key."""
    kid = bytes.fromhex(key_id(private.public_key()))
    body = kid + ULID.from_str(member).bytes + struct.pack(">II", _secs(issued), _secs(expires))
    sig = private.sign(MEMBER_PREFIX.encode() + body)
    return MEMBER_PREFIX + _b32(body + sig)


def _split(text: str, prefix: str) -> bytes:
    if not isinstance(text, str) or len(text) > MAX_TOKEN_LEN:
        raise TokenError("malformed", "token: too long or not text")
    if not text.upper().startswith("TS"):
        raise TokenError("unknown_version", "token: not a tillstamp token")
    if not text.upper().startswith(prefix):
        raise TokenError("unknown_version", f"token: unknown version {text[:4]!r}, expected {prefix}")
    return _unb32(text[len(prefix):])


def verify_member(
    text: str, keys: Mapping[str, Ed25519PublicKey], now: dt.datetime
) -> MemberToken:
    """Check a member-card token against the trusted member-signing keys (by key id)."""
    raw = _split(text.strip(), MEMBER_PREFIX)
    if len(raw) != 4 + 16 + 8 + SIG_LEN:
        raise TokenError("malformed", "member card: truncated or padded")
    body, sig = raw[:-SIG_LEN], raw[-SIG_LEN:]
    kid = body[:4].hex()
    public = keys.get(kid)
    if public is None:
        raise TokenError("unknown_key", f"member card: signed by unknown key {kid}")
    try:
        public.verify(sig, MEMBER_PREFIX.encode() + body)
    except InvalidSignature:
        raise TokenError("bad_signature", "member card: bad signature (forged or altered)") from None
    issued_s, expires_s = struct.unpack(">II", body[20:28])
    expires = _time(expires_s) if expires_s else None
    if expires is not None and now >= expires:
        raise TokenError("expired", f"member card: expired at {expires.isoformat()}")
    return MemberToken(str(ULID.from_bytes(body[4:20])), _time(issued_s), expires, kid)


def _text(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError(f"{s[:20]!r}...: longer than 255 bytes")
    return bytes([len(b)]) + b


def sign_claim(
    private: Ed25519PrivateKey,
    *,
    store: str,
    terminal: str,
    receipt: str,
    stamps: int,
    issued: dt.datetime,
    expires: dt.datetime,
    url: str = "",
) -> str:
    """A receipt-claim token (prefixed by the claim URL), signed with the terminal's key."""
    if not 0 < stamps < 65536:
        raise ValueError("stamps: a claim carries 1 to 65535 stamps")
    body = (
        _text(store) + _text(terminal) + _text(receipt)
        + struct.pack(">HII", stamps, _secs(issued), _secs(expires))
    )
    sig = private.sign(CLAIM_PREFIX.encode() + body)
    return url + CLAIM_PREFIX + _b32(body + sig)


def claim_terminal(text: str) -> str:
    """The terminal a claim says it comes from (unverified), to look its key up."""
    return _parse_claim(text)[0][1]


def _parse_claim(text: str) -> tuple[tuple[str, str, str, int, int, int], bytes, bytes]:
    text = text.strip()
    idx = text.upper().rfind(CLAIM_PREFIX)
    if idx < 0:
        if MEMBER_PREFIX in text.upper():
            raise TokenError("unknown_version", "claim: this is a member card, not a receipt claim")
        raise TokenError("unknown_version", "claim: not a tillstamp receipt claim")
    raw = _split(text[idx:], CLAIM_PREFIX)
    if len(raw) < SIG_LEN + 3 + 10:
        raise TokenError("malformed", "claim: truncated")
    body, sig = raw[:-SIG_LEN], raw[-SIG_LEN:]
    pos = 0
    texts = []
    try:
        for _ in range(3):
            n = body[pos]
            texts.append(body[pos + 1: pos + 1 + n].decode())
            if len(body[pos + 1: pos + 1 + n]) != n:
                raise IndexError
            pos += 1 + n
        stamps, issued, expires = struct.unpack(">HII", body[pos:pos + 10])
    except (IndexError, UnicodeDecodeError, struct.error):
        raise TokenError("malformed", "claim: truncated or corrupted") from None
    if pos + 10 != len(body):
        raise TokenError("malformed", "claim: unexpected trailing bytes")
    return (texts[0], texts[1], texts[2], stamps, issued, expires), body, sig


def verify_claim(text: str, terminal_keys: Mapping[str, Ed25519PublicKey], now: dt.datetime) -> ClaimToken:
    """Check a receipt claim against the printing terminal's public key."""
    (store, terminal, receipt, stamps, issued, expires), body, sig = _parse_claim(text)
    public = terminal_keys.get(terminal)
    if public is None:
        raise TokenError("unknown_key", f"claim: terminal {terminal!r} is not known here")
    try:
        public.verify(sig, CLAIM_PREFIX.encode() + body)
    except InvalidSignature:
        raise TokenError("bad_signature", "claim: bad signature (forged or altered)") from None
    if now >= _time(expires):
        raise TokenError("expired", f"claim: expired at {_time(expires).isoformat()}")
    token_id = hashlib.sha256(body).hexdigest()[:32]
    return ClaimToken(store, terminal, receipt, stamps, _time(issued), _time(expires), token_id)


def claim_token_id(text: str) -> str:
    """The id of a claim payload (the hash of its signed body), read without verifying it: for
    the till that printed it, to name the claim a refund revokes."""
    _, body, _ = _parse_claim(text)
    return hashlib.sha256(body).hexdigest()[:32]


def new_private_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def private_pem(private: Ed25519PrivateKey) -> bytes:
    """PEM (PKCS#8, unencrypted: the file is protected by its mode) of a private key."""
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_pem(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("not an Ed25519 private key")
    return key
