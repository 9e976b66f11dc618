"""Events on the wire without a model object per event.

The till writes each ledger row straight to the wire (the body is stored as canonical JSON
already, so it travels verbatim); HQ reads a batch with one parse and a typed check per
event (the same constraints as `protocol.WireEvent`, which documents the JSON form in
OpenAPI). Both ends agree on one content digest: the till's ledger hash chain,

    digest(seq) = SHA256(digest(seq - 1) + canonical(event without body) + 0x1F + canonical(body))

(`loyalty.events.content_hash`, with digest(0) = ""). HQ keeps it per (terminal, seq) to
compare a resent position, and a till may send the digest of its last event (`hash`) so HQ
can check, with one comparison per batch, that what it stores is exactly the till's ledger.

Two push bodies carry the same events (both gzip on the wire):

- `application/json`: `{"events": [...], "members": [...], "hash": tip?}` (`protocol.PushRequest`).
  HQ must re-encode every body to find the bytes its digest covers.
- `application/x-tillstamp-ledger` (what tills send): one line per event holding exactly
  those bytes, `canonical(head) 0x1F canonical(body)`, then one trailer line
  `{"members": [...], "hash": tip?}`. Canonical JSON has no raw newline or 0x1F, so the
  split is exact. HQ hashes each line as received and encodes nothing again: one regular
  expression reads a canonical head whose strings need no escape (nearly every event) and
  checks each field's type, length and form; any other head is parsed and must equal its
  canonical rebuild, so the fields stored are exactly the text hashed. Each body must be
  exactly one JSON object (read by the C scanner, not re-encoded).

Two kinds of fault. A body that cannot be read as a batch (not the wire format, a head that
is not canonical, a field of the wrong type, no sequence number) raises `WireError`: nothing
of the batch is stored. An event that is well formed but breaks the event rules shared with
the tills (`loyalty.rules`: control characters, lengths, bounds, an unknown kind, a body that
is not an object) is returned with `problem` set: HQ quarantines that one event and takes
the rest, so a till that once committed such an event is not stuck behind it for ever.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from json.scanner import make_scanner
from typing import Any, NamedTuple

from pydantic import ValidationError

from ..loyalty import rules
from ..loyalty.events import KINDS, SALE, head_json
from .protocol import MAX_BATCH_EVENTS, WireMember

_FIELDS = frozenset(("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body"))
_REQUIRED = frozenset(("id", "terminal", "store", "seq", "kind", "at", "stamps"))
_HEAD = frozenset(_FIELDS - {"body"})
_canonical_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
LEDGER_TYPE = "application/x-tillstamp-ledger"


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
    """One pushed event, checked, with the bytes its digest covers (`content`); `problem` says
    which event rule it breaks (HQ quarantines it) or is None."""

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
    problem: str | None = None


class WireBatch(NamedTuple):
    """A decoded push: events in the order sent, member rows, and the till's chain tip if sent."""

    events: list[Incoming]
    members: list[dict[str, Any]]
    tip: str | None


def ledger_line(r: LedgerRow) -> str:
    """A ledger row as a line of the ledger push body: exactly the text its ledger hash covers."""
    return head_json(r.id, r.terminal, r.store, r.seq, r.kind, r.member, r.at, r.stamps, r.ref) + "\x1f" + r.body


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


def _types_ok(eid: Any, terminal: Any, store: Any, kind: Any, member: Any, ref: Any, at: Any, seq: Any,
              stamps: Any) -> bool:
    """The head's types: what must hold for the event to have a place in the sequence at all."""
    return (type(eid) is str and type(terminal) is str and type(store) is str and type(kind) is str
            and (member is None or type(member) is str) and (ref is None or type(ref) is str)
            and type(at) is str and type(seq) is int and seq >= 1 and type(stamps) is int)


def _types_error(d: dict[str, Any], i: int) -> WireError:
    """Which head field has the wrong type (the slow path, for the message only)."""
    for key in ("id", "terminal", "store", "kind", "member", "ref", "at"):
        v = d.get(key)
        if not (v is None and key in ("member", "ref")) and type(v) is not str:
            return _bad(i, f"{key} must be a string")
    if type(d["seq"]) is not int or d["seq"] < 1:
        return _bad(i, "seq must be an integer >= 1")
    if type(d["stamps"]) is not int:
        return _bad(i, "stamps must be an integer")
    return _bad(i, "body must be an object")


def _at_problem(at: str, *, ledger_form: bool) -> str | None:
    """Why an event time is not acceptable, or None (ledger lines carry it as the ledger writes it)."""
    if not 10 <= len(at) <= 40:
        return "at: must be 10-40 characters"
    try:
        t = dt.datetime.fromisoformat(at)
    except ValueError:
        return f"at: {at[:40]!r} is not an ISO time"
    if t.tzinfo is None:
        return "at: event time has no UTC offset"
    if ledger_form and (t.utcoffset() != dt.timedelta(0) or t.isoformat() != at):
        return f"at: {at!r} is not a UTC time as the ledger writes it"
    return None


def decode_event(d: Any, i: int = 0) -> Incoming:
    """Check one wire event (the constraints of `protocol.WireEvent` and `loyalty.rules`) and
    prepare it for storage; an event that breaks a rule comes back with `problem` set."""
    if type(d) is not dict:
        raise _bad(i, "not an object")
    keys = d.keys()
    if not (keys <= _FIELDS and _REQUIRED <= keys):
        raise _bad(i, f"unknown fields {sorted(keys - _FIELDS)}, missing fields {sorted(_REQUIRED - keys)}")
    eid, terminal, store, kind, raw_at = d["id"], d["terminal"], d["store"], d["kind"], d["at"]
    member, ref, seq, stamps, body = d.get("member"), d.get("ref"), d["seq"], d["stamps"], d.get("body", {})
    if not (_types_ok(eid, terminal, store, kind, member, ref, raw_at, seq, stamps) and type(body) is dict):
        raise _types_error(d, i)
    at_problem = _at_problem(raw_at, ledger_form=False)
    at = raw_at
    if at_problem is None:
        # Stored and hashed in the form the till hashes (Event.to_wire): UTC, isoformat.
        t = dt.datetime.fromisoformat(raw_at)
        at = t.isoformat() if t.tzinfo is dt.UTC else t.astimezone(dt.UTC).isoformat()
    problem = rules.head_problem(eid, terminal, store, kind, member, ref, stamps) or at_problem or \
        rules.body_problem(kind, body)
    try:
        body_json = _canonical_encoder.encode(body)
        content = (head_json(eid, terminal, store, seq, kind, member, at, stamps, ref) + "\x1f" + body_json).encode()
    except (ValueError, UnicodeEncodeError) as e:
        raise _bad(i, f"cannot encode: {e}") from None
    return Incoming(eid, terminal, store, seq, kind, member, at, stamps, ref, body_json, content, problem)


def decode_events(events: Sequence[Any], start: int = 0) -> list[Incoming]:
    """Check a list of wire events (`start` numbers them in messages)."""
    return [decode_event(d, i) for i, d in enumerate(events, start)]


def _envelope(data: Any, n_events: int) -> tuple[list[dict[str, Any]], str | None]:
    """Check what travels beside the events: (member rows, tip)."""
    if not 1 <= n_events <= MAX_BATCH_EVENTS:
        raise WireError(f"events must be a list of 1-{MAX_BATCH_EVENTS} events")
    members = data.get("members") or []
    if type(members) is not list:
        raise WireError("members must be a list")
    tip = data.get("hash")
    if tip is not None and type(tip) is not str:
        raise WireError("hash must be a string")
    return [member_row(m) for m in members], tip


REFUSED = "_refused"  # the key a member row HQ cannot take carries, with the reason


def member_row(m: Any) -> dict[str, Any]:
    """A member row checked (the full model: few, and PII), or `{"id", REFUSED: reason}` for one
    that breaks the rules: HQ keeps the batch and raises an alert rather than refuse it, so a
    till never stays stuck behind a name it once accepted."""
    try:
        row = WireMember.model_validate(m).model_dump()
    except ValidationError as e:
        mid = m.get("id") if type(m) is dict and type(m.get("id")) is str else None
        return {"id": mid if mid and not rules.text_problem(mid, rules.MAX_ID, 1) else None,
                REFUSED: str(e).splitlines()[0][:200]}
    for key, value in row.items():
        problem = None if value is None else rules.text_problem(value, 200)
        if problem is not None:
            bad_id = key == "id"
            return {"id": None if bad_id else row["id"], REFUSED: f"{key}: {problem}"}
    return row


def split_push(raw: bytes) -> tuple[list[Any], list[dict[str, Any]], str | None]:
    """Parse a JSON push body and check everything but the events themselves: (raw events, member rows, tip)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"body is not JSON: {e}") from None
    if type(data) is not dict:
        raise WireError("body must be a JSON object")
    events = data.get("events")
    if type(events) is not list:
        raise WireError(f"events must be a list of 1-{MAX_BATCH_EVENTS} events")
    rows, tip = _envelope(data, len(events))
    return events, rows, tip


def decode_push(raw: bytes) -> WireBatch:
    """Decode a JSON push body: `{"events": [...], "members": [...], "hash": tip?}`."""
    events, rows, tip = split_push(raw)
    return WireBatch(decode_events(events), rows, tip)


def split_ledger(raw: bytes) -> tuple[list[str], list[dict[str, Any]], str | None]:
    """Split a ledger push body (see the module docstring) and check its trailer:
    (event lines, member rows, tip)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise WireError(f"body is not UTF-8: {e}") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if len(lines) > MAX_BATCH_EVENTS + 1:
        raise WireError(f"events must be a list of 1-{MAX_BATCH_EVENTS} events")
    try:
        trailer = json.loads(lines.pop()) if lines else None
    except ValueError as e:
        raise WireError(f"the last line must be the trailer object: {e}") from None
    if type(trailer) is not dict or not trailer.keys() <= {"members", "hash"}:
        raise WireError('the last line must be the trailer object {"members": [...], "hash": ...}')
    rows, tip = _envelope(trailer, len(lines))
    return lines, rows, tip


# The exact shape of a canonical ledger line whose strings need no JSON escape and hold no
# control character (nearly all): one match checks every field's type, length and form (at:
# UTC, as `isoformat` writes it). A line it does not fit takes `_decode_line`, which says
# precisely what is wrong, if anything.
_PLAIN = r'[^"\\\x00-\x1f\x7f-\x9f]'
_LINE = re.compile(
    r'\{"at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.(?!000000)\d{6})?\+00:00)",'
    rf'"id":"({_PLAIN}{{1,64}})","kind":"({_PLAIN}{{1,40}})","member":(?:"({_PLAIN}{{0,64}})"|null),'
    rf'"ref":(?:"({_PLAIN}{{0,200}})"|null),"seq":([1-9]\d{{0,18}}),"stamps":(0|-?[1-9]\d{{0,6}}),'
    rf'"store":"({_PLAIN}{{1,64}})","terminal":"({_PLAIN}{{1,64}})"\}}\x1f(\{{.*\}})', re.DOTALL)
# The C scanner: one value from an index, without json.loads' wrapper (typeshed types it oddly).
_scan: Callable[[str, int], tuple[Any, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def _object(text: str) -> dict[str, Any] | None:
    """`text` read as exactly one JSON object, or None."""
    try:
        value, end = _scan(text, 0)
    except (ValueError, StopIteration, RecursionError):
        return None
    return value if end == len(text) and type(value) is dict else None


_NOT_OBJECT = "body: must be one JSON object"


def _body_problem(kind: str, body: str) -> str | None:
    """Why a body breaks the rules, or None; only a sale's body is read further than its braces."""
    obj = _object(body)
    if obj is None:
        return _NOT_OBJECT
    return rules.body_problem(kind, obj) if kind == SALE else None


def decode_lines(lines: Sequence[str], start: int = 0) -> list[Incoming]:
    """Check event lines of a ledger push (`start` numbers them in messages) and prepare them
    for storage; `content` is each line's own bytes, the text its digest covers. An event that
    breaks an event rule comes back with `problem` set."""
    out = []
    match = _LINE.fullmatch
    fromiso = dt.datetime.fromisoformat
    kinds = KINDS
    limit = rules.MAX_EVENT_STAMPS
    scan = _scan
    new = tuple.__new__  # the NamedTuple's own constructor is a Python call: twice the time per event
    for i, line in enumerate(lines, start):
        m = match(line)
        if m is None:
            out.append(_decode_line(line, i))
            continue
        at, eid, kind, member, ref, seq, stamps, store, terminal, body = m.groups()
        n = int(stamps)
        problem = None
        if not -limit <= n <= limit:
            problem = f"stamps: must be an integer within +-{limit:,}"
        elif kind not in kinds:
            problem = f"kind: unknown kind {kind!r}"
        else:
            try:
                fromiso(at)
            except ValueError:
                problem = f"at: {at!r} is not an ISO time"
            else:
                if kind == SALE:
                    problem = _body_problem(kind, body)
                else:  # `_body_problem` inline for the other kinds (nearly every event): one object
                    try:
                        value, end = scan(body, 0)
                    except (ValueError, StopIteration, RecursionError):
                        problem = _NOT_OBJECT
                    else:
                        if end != len(body) or type(value) is not dict:
                            problem = _NOT_OBJECT
        out.append(new(Incoming, (eid, terminal, store, int(seq), kind, member, at, n, ref, body, line.encode(),
                                  problem)))
    return out


def _decode_line(line: str, i: int) -> Incoming:
    """One ledger line by the general rules (strings with escapes), or the reason it is refused."""
    head, sep, body = line.partition("\x1f")
    if not sep:
        raise _bad(i, "a ledger line is head 0x1F body")
    d = _loads_object(head, i, "head")
    if d.keys() != _HEAD:
        raise _bad(i, f"head must have exactly the fields {sorted(_HEAD)}")
    eid, terminal, store, kind, at = d["id"], d["terminal"], d["store"], d["kind"], d["at"]
    member, ref, seq, stamps = d["member"], d["ref"], d["seq"], d["stamps"]
    if not _types_ok(eid, terminal, store, kind, member, ref, at, seq, stamps):
        raise _types_error({**d, "body": {}}, i)
    if head_json(eid, terminal, store, seq, kind, member, at, stamps, ref) != head:
        raise _bad(i, "head is not canonical JSON (sorted keys, no spaces, no needless escapes)")
    problem = rules.head_problem(eid, terminal, store, kind, member, ref, stamps) or \
        _at_problem(at, ledger_form=True) or _body_problem(kind, body)
    return Incoming(eid, terminal, store, seq, kind, member, at, stamps, ref, body, line.encode(), problem)


def _loads_object(text: str, i: int, what: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except ValueError as e:
        raise _bad(i, f"{what} is not JSON: {e}") from None
    if type(d) is not dict:
        raise _bad(i, f"{what} must be a JSON object")
    return d
