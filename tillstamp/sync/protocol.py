"""The sync wire format (v1): pydantic models for every HTTP body, and the request-signing
scheme that authenticates each request as one terminal.

A signed request carries four headers; the signature is Ed25519 by the terminal's key over

    TS1-REQ \\n METHOD \\n PATH?QUERY \\n TERMINAL \\n TIME_MS \\n NONCE \\n SHA256_HEX(BODY)

where BODY is the exact bytes sent (gzip-compressed when Content-Encoding says so). HQ
accepts TIME_MS within `WINDOW_S` of its own clock and each NONCE once per terminal.
Every HQ answer carries HQ's clock in `X-HQ-Time` (Unix milliseconds).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

VERSION = "v1"
H_TERMINAL = "X-Tillstamp-Terminal"
H_TIME = "X-Tillstamp-Time"
H_NONCE = "X-Tillstamp-Nonce"
H_SIGNATURE = "X-Tillstamp-Signature"
H_HQ_TIME = "X-HQ-Time"
WINDOW_S = 300
MAX_BATCH_EVENTS = 20_000
MAX_BODY_BYTES = 8 * 1024 * 1024

Id = Field(min_length=1, max_length=64)


class WireEvent(BaseModel):
    """One ledger event as it travels (the form of `Event.to_wire`)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Id
    terminal: str = Id
    store: str = Id
    seq: int = Field(ge=1)
    kind: str = Field(min_length=1, max_length=40)
    member: str | None = Field(default=None, max_length=64)
    at: str = Field(min_length=10, max_length=40)
    stamps: int = Field(ge=-1_000_000, le=1_000_000)
    ref: str | None = Field(default=None, max_length=200)
    body: dict[str, Any] = Field(default_factory=dict)


class WireMember(BaseModel):
    """A member's PII row; it travels beside the events, never inside them."""

    model_config = ConfigDict(extra="forbid")

    id: str = Id
    phone: str | None = None
    name: str | None = None
    email: str | None = None
    birthday: str | None = None
    origin: str = "till"
    enrolled_at: str | None = None


class PushRequest(BaseModel):
    """A batch of one terminal's events in sequence order, with the member rows they changed.

    `hash` is the till's ledger hash of the last event (optional): HQ checks that the events
    it received chain to it. This is the JSON form, for tools and tests; tills send the same
    content as ledger lines (`wire.LEDGER_TYPE`). HQ decodes either without this model
    (`wire.decode_push`, `wire.decode_lines`); the model documents the format in OpenAPI.
    """

    events: list[WireEvent] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)
    members: list[WireMember] = Field(default_factory=list)
    hash: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class PushResponse(BaseModel):
    """What HQ now holds for the terminal: `acked` is the highest contiguous sequence."""

    terminal: str
    acked: int
    inserted: int
    duplicates: int
    adjustments: int = 0
    refused: int = 0  # events that break the event rules: quarantined at HQ, the sequence moved past them


class AuthorizeRequest(BaseModel):
    """A till asking head office to authorise a redemption above its offline caps (or above its
    local view) against the merged balance. `pending` is the stamps this terminal's own events
    with seq > `after` move for the member (`after`: what the till last saw HQ acknowledge), so
    what the till recorded but has not pushed yet counts, once."""

    model_config = ConfigDict(extra="forbid")

    member: str = Id
    reward: str = Field(min_length=1, max_length=64)
    cost: int = Field(ge=1, le=1_000_000)
    after: int = Field(ge=0)
    pending: int = Field(ge=-10**12, le=10**12)


class AuthorizeResponse(BaseModel):
    """Head office's answer: `grant` (to put in the redemption's body) when `ok`; `available` is
    the merged balance, plus the till's pending stamps, minus other grants still held."""

    ok: bool
    grant: str | None = None
    available: int
    expires: str | None = None


class Change(BaseModel):
    """One entry of the pull feed. `kind` says what `data` is."""

    seq: int
    kind: Literal["program", "member", "erased", "revoked", "terminal_key", "member_key", "claim_revoked", "store"]
    key: str
    data: dict[str, Any]


class PullResponse(BaseModel):
    """A page of the change feed after `cursor`; store `next` only once the page is applied."""

    cursor: int
    next: int
    more: bool
    reset: bool = False
    watermark: int = 0
    changes: list[Change]
    # The newest complete tag refresh at HQ (UTC ISO): every member snapshot up to the end of the
    # feed holds tags at least this fresh. Absent from an HQ without tags; a till from before
    # ignores it (and `crm` in member snapshots). Only meaningful on a page with `more` false.
    tags_as_of: str | None = None


class EnrollRequest(BaseModel):
    """A till asking to join with a one-time code; `proof` is its signature over the code."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=6, max_length=64)
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    proof: str = Field(min_length=10, max_length=200)
    terminal: str | None = Field(default=None, max_length=32)
    store: str | None = Field(default=None, max_length=32)
    member_key: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class EnrollResponse(BaseModel):
    """The ids HQ gives the terminal, the member-card keys it must trust, and the program."""

    terminal: str
    store: str
    member_keys: dict[str, str]
    program: dict[str, Any] | None
    program_version: int
    store_name: str | None = None  # what receipts print as the shop's name, when HQ knows it


class ErrorBody(BaseModel):
    """Every refusal: a stable code, a sentence, and for a gap the sequence HQ expects."""

    error: str
    message: str
    expected: int | None = None


def body_digest(body: bytes) -> str:
    """SHA-256 hex of the body bytes as sent."""
    return hashlib.sha256(body).hexdigest()


def signing_text(method: str, path: str, terminal: str, time_ms: int, nonce: str, body: bytes) -> bytes:
    """The exact bytes a request signature covers."""
    return "\n".join(
        ("TS1-REQ", method.upper(), path, terminal, str(time_ms), nonce, body_digest(body))
    ).encode()


def sign_request(key: Ed25519PrivateKey, terminal: str, method: str, path: str, body: bytes,
                 time_ms: int, nonce: str | None = None) -> dict[str, str]:
    """The auth headers for one request."""
    nonce = nonce or secrets.token_hex(16)
    sig = key.sign(signing_text(method, path, terminal, time_ms, nonce, body))
    return {
        H_TERMINAL: terminal,
        H_TIME: str(time_ms),
        H_NONCE: nonce,
        H_SIGNATURE: base64.urlsafe_b64encode(sig).decode().rstrip("="),
    }


def enroll_proof(key: Ed25519PrivateKey, code: str) -> str:
    """Proof that the enrolling till holds the private key it registers."""
    return base64.urlsafe_b64encode(key.sign(b"TS1-ENROLL\n" + code.encode())).decode()


def check_signature(public: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    """True when `signature` (base64url, padding optional) signs `message`."""
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        public.verify(raw, message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
