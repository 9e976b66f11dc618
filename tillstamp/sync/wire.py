"""Events on the wire without a model object per event.

The till writes each ledger row straight to JSON (the body is stored as canonical JSON
already, so it travels verbatim); HQ reads a batch with one `json.loads` and a typed check
per event (the same constraints as `protocol.WireEvent`, which still documents the format in
OpenAPI). Both ends agree on one content digest: the till's ledger hash chain,

    digest(seq) = SHA256(digest(seq - 1) + canonical(event without body) + 0x1F + canonical(body))

(`loyalty.events.content_hash`, with digest(0) = ""). HQ keeps it per (terminal, seq) to
compare a resent position, and a till may send the digest of its last event (`hash`) so HQ
can check, with one comparison per batch, that what it stores is exactly the till's ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring
from typing import Any, NamedTuple

from ..loyalty.events import KINDS
from .protocol import MAX_BATCH_EVENTS, WireMember

_FIELDS = frozenset(("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body"))
_REQUIRED = frozenset(("id", "terminal", "store", "seq", "kind", "at", "stamps"))
_canonical_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class WireError(ValueError):
    """A push body that does not have the wire format (answered 422)."""


class LedgerRow(NamedTuple):
    """A till ledger row as stored: `at` is UTC ISO text, `body` canonical JSON text."""

    seq: int
    id: str
    kind: str
    member: str | None
    at: str
    stamps: int
    ref: str | None
    body: str
    terminal: str
    store: str
    hash: str


class Incoming(NamedTuple):
    """One pushed event, checked, with the bytes its digest covers (`content`)."""

    id: str
    terminal: str
    store: str
    seq: int
    kind: str
    member: str | None
    at: str
    stamps: int
    ref: str | None
    body: str
    content: bytes


class WireBatch(NamedTuple):
    """A decoded push: events in the order sent, member rows, and the till's chain tip if sent."""

    events: list[Incoming]
    members: list[dict[str, Any]]
    tip: str | None


def _str(v: str | None) -> str:
    return "null" if v is None else encode_basestring(v)


def event_json(r: LedgerRow) -> str:
    """The wire JSON of a ledger row (the form of `Event.to_wire`), without re-encoding the body."""
    return (f'{{"id":{encode_basestring(r.id)},"terminal":{encode_basestring(r.terminal)},'
            f'"store":{encode_basestring(r.store)},"seq":{r.seq},"kind":{encode_basestring(r.kind)},'
            f'"member":{_str(r.member)},"at":{encode_basestring(r.at)},"stamps":{r.stamps},'
            f'"ref":{_str(r.ref)},"body":{r.body}}}')


def head_json(id: str, terminal: str, store: str, seq: int, kind: str, member: str | None, at: str,
              stamps: int, ref: str | None) -> str:
    """canonical(event.to_wire() without body), built directly (keys in sorted order)."""
    return (f'{{"at":{encode_basestring(at)},"id":{encode_basestring(id)},"kind":{encode_basestring(kind)},'
            f'"member":{_str(member)},"ref":{_str(ref)},"seq":{seq},"stamps":{stamps},'
            f'"store":{encode_basestring(store)},"terminal":{encode_basestring(terminal)}}}')


def chain(prev: str, contents: Iterable[bytes]) -> list[str]:
    """The hash chain over events' `content`, starting after `prev` (the till's ledger hashes)."""
    out = []
    sha = hashlib.sha256
    for content in contents:
        prev = sha(prev.encode() + content).hexdigest()
        out.append(prev)
    return out


def _bad(i: int, what: str) -> WireError:
    return WireError(f"events[{i}]: {what}")


_TEXT = (("id", 1, 64, False), ("terminal", 1, 64, False), ("store", 1, 64, False), ("kind", 1, 40, False),
         ("member", 0, 64, True), ("ref", 0, 200, True), ("at", 10, 40, False))


def _explain(d: dict[str, Any], i: int) -> WireError:
    """Which constraint an event breaks (the slow path, for the message only)."""
    for key, lo, hi, null in _TEXT:
        v = d.get(key)
        if not (v is None and null) and (type(v) is not str or not lo <= len(v) <= hi):
            return _bad(i, f"{key} must be a string of {lo}-{hi} characters")
    if type(d["seq"]) is not int or d["seq"] < 1:
        return _bad(i, "seq must be an integer >= 1")
    if type(d["stamps"]) is not int or not -1_000_000 <= d["stamps"] <= 1_000_000:
        return _bad(i, "stamps must be an integer within +-1,000,000")
    return _bad(i, "body must be an object")


def decode_event(d: Any, i: int = 0) -> Incoming:
    """Check one wire event (the constraints of `protocol.WireEvent`) and prepare it for storage."""
    if type(d) is not dict:
        raise _bad(i, "not an object")
    keys = d.keys()
    if not (keys <= _FIELDS and _REQUIRED <= keys):
        raise _bad(i, f"unknown fields {sorted(keys - _FIELDS)}, missing fields {sorted(_REQUIRED - keys)}")
    eid, terminal, store, kind, raw_at = d["id"], d["terminal"], d["store"], d["kind"], d["at"]
    member, ref, seq, stamps, body = d.get("member"), d.get("ref"), d["seq"], d["stamps"], d.get("body", {})
    # One expression for the common case; _explain finds the broken constraint otherwise.
    if not (type(eid) is str and 0 < len(eid) <= 64 and type(terminal) is str and 0 < len(terminal) <= 64
            and type(store) is str and 0 < len(store) <= 64 and type(kind) is str and 0 < len(kind) <= 40
            and (member is None or type(member) is str and len(member) <= 64)
            and (ref is None or type(ref) is str and len(ref) <= 200)
            and type(raw_at) is str and 10 <= len(raw_at) <= 40
            and type(seq) is int and seq >= 1 and type(stamps) is int and -1_000_000 <= stamps <= 1_000_000
            and type(body) is dict):
        raise _explain(d, i)
    if kind not in KINDS:
        raise _bad(i, f"unknown kind {kind!r}")
    try:
        t = dt.datetime.fromisoformat(raw_at)
    except ValueError:
        raise _bad(i, f"at {raw_at!r} is not an ISO time") from None
    if t.tzinfo is None:
        raise _bad(i, "event time has no UTC offset")
    # Stored and hashed in the form the till hashes (Event.to_wire): UTC, isoformat.
    at = t.isoformat() if t.tzinfo is dt.UTC else t.astimezone(dt.UTC).isoformat()
    try:
        body_json = _canonical_encoder.encode(body)
        content = (head_json(eid, terminal, store, seq, kind, member, at, stamps, ref) + "\x1f" + body_json).encode()
    except (ValueError, UnicodeEncodeError) as e:
        raise _bad(i, f"cannot encode: {e}") from None
    return Incoming(eid, terminal, store, seq, kind, member, at, stamps, ref, body_json, content)


def decode_events(events: Sequence[Any]) -> list[Incoming]:
    """Check a list of wire events."""
    return [decode_event(d, i) for i, d in enumerate(events)]


def split_push(raw: bytes) -> tuple[list[Any], list[dict[str, Any]], str | None]:
    """Parse a push body and check everything but the events themselves: (raw events, member rows, tip)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"body is not JSON: {e}") from None
    if type(data) is not dict:
        raise WireError("body must be a JSON object")
    events = data.get("events")
    if type(events) is not list or not 1 <= len(events) <= MAX_BATCH_EVENTS:
        raise WireError(f"events must be a list of 1-{MAX_BATCH_EVENTS} events")
    members = data.get("members") or []
    if type(members) is not list:
        raise WireError("members must be a list")
    tip = data.get("hash")
    if tip is not None and type(tip) is not str:
        raise WireError("hash must be a string")
    rows = [WireMember.model_validate(m).model_dump() for m in members]  # few, and PII: the full model
    return events, rows, tip


def decode_push(raw: bytes) -> WireBatch:
    """Decode a push body: `{"events": [...], "members": [...], "hash": tip?}`."""
    events, rows, tip = split_push(raw)
    return WireBatch(decode_events(events), rows, tip)
