"""Head office's sync service: enrolment, request authentication, push ingest and the pull
feed, over an `HqStore`. Balances, tiers and overdrafts come from `loyalty`, the same
functions the tills use, so HQ and tills agree on what the events mean.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..loyalty import events as ev
from ..loyalty import tokens
from ..loyalty.events import Event, derived_id, new_id
from ..loyalty.program import Program, parse_program
from ..loyalty.projections import balance, tier_at
from ..sync import protocol as p
from ..sync.wire import (
    LEDGER_TYPE,
    Incoming,
    WireBatch,
    WireError,
    decode_events,
    decode_lines,
    split_ledger,
    split_push,
)
from .store import HQ_TERMINAL, BadChain, EnrollRefused, HqStore, TerminalRow, slices


class AuthFailed(Exception):
    """A request that is not accepted as coming from the terminal it names."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


class BadBatch(ValueError):
    """A push whose content is malformed (400)."""


CHUNK = 2500  # events decoded per step when the store applies a batch chunk by chunk


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Hq:
    """The HQ side of sync over one store."""

    def __init__(self, store: HqStore, *, clock: Callable[[], dt.datetime] = _utcnow,
                 window_s: int = p.WINDOW_S, page_size: int = 200):
        self.store = store
        self.clock = clock
        self.window_s = window_s
        self.page_size = page_size
        self._program: tuple[int, Program] | None = None

    # -- keys, codes, program -----------------------------------------------------------

    def signing_key(self) -> tokens.Ed25519PrivateKey:
        """HQ's member-card key, created on first use."""
        pem = self.store.signing_key()
        if pem is None:
            key = tokens.new_private_key()
            pub = key.public_key()
            self.store.add_member_key(tokens.key_id(pub), tokens.public_bytes(pub).hex(),
                                      tokens.private_pem(key).decode(), self.clock())
            pem = self.store.signing_key()
            assert pem is not None
        return tokens.load_private_pem(pem.encode())

    def new_code(self, store: str, terminal: str | None = None, store_name: str | None = None) -> str:
        """A one-time enrolment code for a till of `store` (optionally with a fixed terminal id).

        `store_name` is remembered for the store (a `store` feed entry) and given to every till
        that enrols for it, so receipts print the shop's name rather than its id.
        """
        for what, val in (("store", store), ("terminal", terminal)):
            if val is not None and (not val or len(val) > 32 or not all(c.isalnum() or c in "-_" for c in val)):
                raise ValueError(f"--{what}: use 1-32 letters, digits, '-' or '_'")
        if store_name is not None and not 0 < len(store_name.strip()) <= 64:
            raise ValueError("--store-name: use 1-64 characters")
        self.signing_key()
        if store_name is not None:
            self.store.put_feed("store", f"store:{store}", {"store": store, "name": store_name.strip()},
                                self.clock())
        code = secrets.token_hex(8).upper()
        self.store.create_code(code, store, terminal, self.clock())
        return code

    def publish_program(self, source: dict[str, Any]) -> int:
        """Validate and publish a program; the same content as the newest version is that version."""
        parse_program(source)  # refuse a bad program before any till sees it
        current = self.store.program()
        if current is not None and _without_version(current[1]) == _without_version(source):
            return current[0]  # publishing the same file twice must not make every till reload
        return self.store.publish_program(source, self.clock())

    def program(self) -> Program | None:
        """The current program, parsed once per version."""
        got = self.store.program()
        if got is None:
            return None
        if self._program is None or self._program[0] != got[0]:
            self._program = (got[0], parse_program(got[1]))
        return self._program[1]

    def enroll(self, req: p.EnrollRequest) -> p.EnrollResponse:
        """Register a till's key with a one-time code and tell it its ids and what to trust."""
        public = tokens.public_from_bytes(bytes.fromhex(req.public_key))
        if not p.check_signature(public, req.proof, b"TS1-ENROLL\n" + req.code.encode()):
            raise AuthFailed(401, "bad_proof", "enrolment: the proof is not signed by the key being registered")
        self.signing_key()
        now = self.clock()
        row = self.store.enroll(req.code, terminal=req.terminal, store=req.store, public_key=req.public_key, now=now)
        if req.member_key:  # cards printed by the till while it ran alone keep working everywhere
            pub = tokens.public_from_bytes(bytes.fromhex(req.member_key))
            self.store.add_member_key(tokens.key_id(pub), req.member_key, None, now)
        prog = self.store.program()
        named = self.store.feed_entry(f"store:{row.store}")
        return p.EnrollResponse(terminal=row.id, store=row.store, member_keys=self.store.member_keys(),
                                program=prog[1] if prog else None, program_version=prog[0] if prog else 0,
                                store_name=named.get("name") if named else None)

    # -- authentication -----------------------------------------------------------------

    def check_sender(self, headers: Mapping[str, str]) -> TerminalRow:
        """The enrolled terminal a request's headers name; AuthFailed (401) when unsigned or unknown.

        Needs no body, so the app calls it before reading one."""
        terminal_id = headers.get(p.H_TERMINAL.lower()) or headers.get(p.H_TERMINAL)
        time_s = headers.get(p.H_TIME.lower()) or headers.get(p.H_TIME)
        nonce = headers.get(p.H_NONCE.lower()) or headers.get(p.H_NONCE)
        sig = headers.get(p.H_SIGNATURE.lower()) or headers.get(p.H_SIGNATURE)
        if not (terminal_id and time_s and nonce and sig) or not time_s.isdigit() or not 8 <= len(nonce) <= 64:
            raise AuthFailed(401, "unsigned", "request is not signed (X-Tillstamp-* headers)")
        term = self.store.terminal(terminal_id)
        if term is None:
            raise AuthFailed(401, "unknown_terminal", f"terminal {terminal_id} is not enrolled")
        return term

    def authenticate(self, method: str, path: str, headers: Mapping[str, str], body: bytes,
                     sender: TerminalRow | None = None) -> TerminalRow:
        """The terminal a signed request comes from; AuthFailed (401) otherwise."""
        term = sender or self.check_sender(headers)
        terminal_id = term.id
        time_s = str(headers.get(p.H_TIME.lower()) or headers.get(p.H_TIME))
        nonce = str(headers.get(p.H_NONCE.lower()) or headers.get(p.H_NONCE))
        sig = str(headers.get(p.H_SIGNATURE.lower()) or headers.get(p.H_SIGNATURE))
        public = tokens.public_from_bytes(bytes.fromhex(term.public_key))
        if not p.check_signature(public, sig, p.signing_text(method, path, terminal_id, int(time_s), nonce, body)):
            raise AuthFailed(401, "bad_signature", "request signature does not verify")
        now = self.clock()
        offset = int(time_s) / 1000 - now.timestamp()
        if abs(offset) > self.window_s:
            raise AuthFailed(401, "clock_skew", f"request time is {offset:+.0f}s from HQ time; "
                                                f"sign with HQ time (see X-HQ-Time)")
        if not self.store.note_request(terminal_id, nonce, int(time_s), now, round(offset, 3), self.window_s):
            raise AuthFailed(401, "replayed", "this request was already received (nonce reused)")
        return term

    # -- push ---------------------------------------------------------------------------

    def push(self, term: TerminalRow, req: p.PushRequest) -> p.PushResponse:
        """Ingest a batch given as a model (tests, tools); the app uses `push_raw`."""
        try:
            events = decode_events([w.model_dump() for w in req.events])
        except WireError as e:
            raise BadBatch(str(e)) from None
        return self.ingest(term, WireBatch(events, [m.model_dump() for m in req.members], req.hash))

    def push_raw(self, term: TerminalRow, raw: bytes, content_type: str = "application/json") -> p.PushResponse:
        """Ingest a push body as received (inflated), in either wire form (`wire.LEDGER_TYPE`
        or JSON): one parse, a typed check per event.

        A store with `ingest_chunks` (PostgreSQL) gets the events CHUNK at a time, decoded and
        checked while it applies the previous chunk, all in one transaction."""
        ledger = content_type.split(";", 1)[0].strip().lower() == LEDGER_TYPE
        try:
            events, members, tip = split_ledger(raw) if ledger else split_push(raw)
        except WireError as e:
            raise BadBatch(str(e)) from None
        decode: Callable[[Sequence[Any], int], list[Incoming]] = decode_lines if ledger else decode_events

        def decode_slice(lo: int, hi: int) -> list[Incoming]:
            try:
                return decode(events[lo:hi], lo)
            except WireError as e:
                raise BadBatch(str(e)) from None

        chunked = getattr(self.store, "ingest_chunks", None)
        if chunked is None or len(events) <= CHUNK:
            return self.ingest(term, WireBatch(decode_slice(0, len(events)), members, tip))
        first: list[int] = []
        bounds = [0]
        step = max(1, CHUNK // 5)  # a small first chunk: the database starts sooner
        while bounds[-1] < len(events):
            bounds.append(min(len(events), bounds[-1] + step))
            step = CHUNK

        def decode_chunk(k: int) -> list[Incoming]:
            lo = bounds[k]
            out = [e for a, b in slices(bounds[k + 1] - lo) for e in decode_slice(lo + a, lo + b)]
            if not first:
                first.append(out[0].seq)
            self._check(term, out, first[0] + lo - 1)
            return out

        try:
            result = chunked(term.id, len(bounds) - 1, decode_chunk, members, self.clock(), self._compensate,
                             tip=tip)
        except BadChain as e:
            raise BadBatch(str(e)) from None
        return p.PushResponse(terminal=term.id, acked=result.acked, inserted=result.inserted,
                              duplicates=result.duplicates, adjustments=len(result.adjustments),
                              refused=result.refused)

    @staticmethod
    def _check(term: TerminalRow, events: Sequence[Incoming], prev: int) -> None:
        """Only this terminal's own events of its own store, in order after `prev`."""
        for e in events:
            if e.terminal != term.id:
                raise AuthFailed(403, "other_terminal", f"event {e.id} belongs to terminal {e.terminal}, not {term.id}")
            if e.store != term.store:
                raise AuthFailed(403, "other_store", f"event {e.id} is for store {e.store}, terminal is in {term.store}")
            if e.seq != prev + 1:
                raise BadBatch(f"events must be in sequence without holes: {prev} then {e.seq}")
            prev = e.seq

    def ingest(self, term: TerminalRow, batch: WireBatch) -> p.PushResponse:
        """Ingest a batch: only this terminal's own events of its own store, in order."""
        events = batch.events
        self._check(term, events, events[0].seq - 1)
        try:
            result = self.store.ingest(term.id, events, batch.members, self.clock(), self._compensate, tip=batch.tip)
        except BadChain as e:
            raise BadBatch(str(e)) from None
        return p.PushResponse(terminal=term.id, acked=result.acked, inserted=result.inserted,
                              duplicates=result.duplicates, adjustments=len(result.adjustments),
                              refused=result.refused)

    def _compensate(self, member: str, events: list[Event]) -> Event | None:
        """Rule 7: an overdraft found after a merge is paid back by HQ, never by dropping events."""
        deficit = -balance(events)
        if deficit <= 0:
            return None
        last = events[-1].id if events else ""
        return Event(
            id=derived_id("overdraft", member, last), kind=ev.ADJUSTED, at=self.clock(), member=member,
            stamps=deficit, ref="overdraft", body={"reason": "overdraft", "deficit": deficit, "after": last},
        )

    # -- online authorisation ------------------------------------------------------------

    def authorize(self, term: TerminalRow, req: p.AuthorizeRequest) -> p.AuthorizeResponse:
        """Authorise a redemption against the merged balance, holding its stamps until the
        redemption (carrying the grant) arrives, or until `max_offline_hours` pass."""
        now = self.clock()
        program = self.program()
        hours = program.offline.max_offline_hours if program else 72
        expires = now + dt.timedelta(hours=hours)
        grant = new_id()
        ok, available = self.store.authorize(term.id, req.member, req.cost, req.after, req.pending, grant, now,
                                             expires)
        if not ok:
            return p.AuthorizeResponse(ok=False, available=available)
        return p.AuthorizeResponse(ok=True, grant=grant, available=available, expires=expires.isoformat())

    # -- pull ---------------------------------------------------------------------------

    def pull(self, term: TerminalRow, cursor: int, limit: int | None = None) -> p.PullResponse:
        """A page of the change feed; member entries carry a snapshot with this terminal's watermark."""
        limit = max(1, min(limit or self.page_size, 1000))
        page = self.store.feed_page(term.id, cursor, limit)
        program = self.program()
        now = self.clock()
        changes = []
        for row in page.rows:
            data = row.payload
            if row.kind == "member":
                member = row.key.split(":", 1)[1]
                events = page.events.get(member, [])
                data = {
                    "member": member,
                    "watermark": page.watermark,
                    "events": [e.to_wire() for e in events],
                    "balance": balance(events),
                    "tier": tier_at(program, events, now).id if program else None,
                    "pii": page.members.get(member),
                }
                if member in page.merged:
                    data["merged_into"] = page.merged[member]
                if member in page.crm:
                    data["crm"] = page.crm[member]  # {"as_of", "tags", "hints"}: docs/SYNC.md
            changes.append(p.Change(seq=row.seq, kind=row.kind, key=row.key, data=data))  # type: ignore[arg-type]
        nxt = page.rows[-1].seq if page.rows else cursor
        return p.PullResponse(cursor=cursor, next=nxt, more=len(page.rows) == limit, reset=cursor == 0,
                              watermark=page.watermark, changes=changes, tags_as_of=page.tags_as_of)

    def stats(self) -> dict[str, Any]:
        """What `hq stats` prints."""
        return self.store.stats()


def _without_version(source: dict[str, Any]) -> dict[str, Any]:
    """A program source without `program.version`, which HQ numbers itself."""
    head = {k: v for k, v in source.get("program", {}).items() if k != "version"}
    return {**source, "program": head}


def load_json_or_toml(text: str) -> dict[str, Any]:
    """A program file's data (TOML, or JSON as HQ stores it)."""
    import tomllib

    stripped = text.lstrip()
    if stripped.startswith("{"):
        return dict(json.loads(text))
    return tomllib.loads(text)


__all__ = ["HQ_TERMINAL", "AuthFailed", "BadBatch", "EnrollRefused", "Hq", "load_json_or_toml"]
