"""Events: the facts of a loyalty program. Everything else is computed from them.

Every event carries `stamps`, the signed change it makes to the member's balance (0 for
events that move no stamps), so a balance is always the sum of a member's events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from ulid import ULID

# Kinds of event. Stamps move only in the kinds marked (+) or (-).
ENROLLED = "member.enrolled"
CONSENT = "member.consent"
SALE = "sale.recorded"
EARNED = "stamps.earned"  # (+) for a sale
REFUNDED = "sale.refunded"
REVERSED = "stamps.reversed"  # (-) taken back for a refund or void
CLAIMED = "stamps.claimed"  # (+) a receipt-claim QR redeemed by a member
REDEEMED = "reward.redeemed"  # (-)
MISSION = "mission.completed"  # (+) bonus stamps, a badge
EXPIRED = "stamps.expired"  # (-)
ADJUSTED = "stamps.adjusted"  # (+/-) a correction, e.g. head office compensating an overdraft
# (-) head office: this member id is an alias of body["into"] (one phone enrolled twice); its
# balance moves to the survivor, which gets a `stamps.adjusted` (+) with ref "merge"
MERGED = "member.merged"

KINDS = frozenset(
    {ENROLLED, CONSENT, SALE, EARNED, REFUNDED, REVERSED, CLAIMED, REDEEMED, MISSION, EXPIRED, ADJUSTED, MERGED}
)
EARNING_KINDS = frozenset({EARNED, CLAIMED, MISSION})
CHANNELS = ("whatsapp", "email", "sms")


@dataclass(frozen=True)
class Event:
    """One fact. `seq` is the terminal's gap-free sequence; `at` is business time only."""

    id: str
    kind: str
    at: dt.datetime
    member: str | None = None
    stamps: int = 0
    ref: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    seq: int = 0
    terminal: str = ""
    store: str = ""

    def with_position(self, *, seq: int, terminal: str, store: str) -> Event:
        """The same event placed in a terminal's sequence."""
        return Event(self.id, self.kind, self.at, self.member, self.stamps, self.ref, self.body, seq, terminal, store)

    def memo(self) -> dict[Any, Any]:
        """Values computed from this event, kept with it: an event never changes once made, and
        the till keeps a member's events between sales, so each is read once, not per sale."""
        d: dict[Any, Any] | None = self.__dict__.get("_memo")
        if d is None:
            d = self.__dict__["_memo"] = {}
        return d

    def to_wire(self) -> dict[str, Any]:
        """The event as JSON-ready data, the form that is hashed, stored and synced."""
        return {
            "id": self.id,
            "terminal": self.terminal,
            "store": self.store,
            "seq": self.seq,
            "kind": self.kind,
            "member": self.member,
            "at": self.at.astimezone(dt.UTC).isoformat(),
            "stamps": self.stamps,
            "ref": self.ref,
            "body": self.body,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Event:
        """Rebuild an event from `to_wire` data."""
        at = dt.datetime.fromisoformat(d["at"])
        if at.tzinfo is None:
            raise ValueError("event time has no UTC offset")
        return cls(
            id=d["id"],
            kind=d["kind"],
            at=at,
            member=d.get("member"),
            stamps=int(d.get("stamps", 0)),
            ref=d.get("ref"),
            body=dict(d.get("body") or {}),
            seq=int(d.get("seq", 0)),
            terminal=d.get("terminal", ""),
            store=d.get("store", ""),
        )


# One encoder for the process: `json.dumps` with options builds a new encoder on every call,
# which cost more than the encoding of a small event body.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(data: Any) -> bytes:
    """Deterministic JSON bytes: the form that is hashed and compared."""
    return _CANONICAL.encode(data).encode()


def _str_or_null(v: str | None) -> str:
    return "null" if v is None else encode_basestring(v)


def head_json(id: str, terminal: str, store: str, seq: int, kind: str, member: str | None, at: str,
              stamps: int, ref: str | None) -> str:
    """canonical(event.to_wire() without body), built directly (keys in sorted order)."""
    return (f'{{"at":{encode_basestring(at)},"id":{encode_basestring(id)},"kind":{encode_basestring(kind)},'
            f'"member":{_str_or_null(member)},"ref":{_str_or_null(ref)},"seq":{seq},"stamps":{stamps},'
            f'"store":{encode_basestring(store)},"terminal":{encode_basestring(terminal)}}}')


def utc_text(at: dt.datetime) -> str:
    """An event time as stored, hashed and sent: UTC ISO 8601 text."""
    return at.astimezone(dt.UTC).isoformat()


def content_hash(event: Event, prev: str = "", body_json: bytes | None = None, at_text: str | None = None) -> str:
    """Hash of an event chained to the previous one, so any later edit of the ledger shows.

    Covers every wire field; `body_json` (canonical(event.body)) and `at_text`
    (utc_text(event.at)) may be passed when the caller already has them, since encoding
    is the costly part.
    """
    body = canonical(event.body) if body_json is None else body_json
    at = utc_text(event.at) if at_text is None else at_text
    e = event
    if (type(e.id) is str and type(e.terminal) is str and type(e.store) is str and type(e.kind) is str
            and type(e.seq) is int and type(e.stamps) is int and (e.member is None or type(e.member) is str)
            and (e.ref is None or type(e.ref) is str)):
        # The usual event: its head written directly, the same bytes as canonical() gives.
        head = head_json(e.id, e.terminal, e.store, e.seq, e.kind, e.member, at, e.stamps, e.ref).encode()
    else:
        # Anything else (a field of an unexpected type, from a damaged row) takes the general path.
        wire = e.to_wire()
        del wire["body"]
        wire["at"] = at
        head = canonical(wire)
    return hashlib.sha256(prev.encode() + head + b"\x1f" + body).hexdigest()


def new_id() -> str:
    """A fresh, time-ordered, globally unique id (ULID)."""
    return str(ULID())


def derived_id(*cause: str) -> str:
    """A deterministic id taken from a cause, so two tills deriving it produce one event."""
    digest = hashlib.sha256("\x1f".join(cause).encode()).digest()[:16]
    return str(ULID.from_bytes(digest))
