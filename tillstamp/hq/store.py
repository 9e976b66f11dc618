"""HQ storage: one interface, two backends (SQLite by default, PostgreSQL at scale).

`SqlHqStore` holds the SQL both backends share (written with `?` placeholders; the
PostgreSQL backend rewrites them), and every business write is one transaction. The
backends add only what differs: connections, transactions, schema, and the bulk paths
(executemany vs COPY into a staging table, both followed by INSERT ... ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..loyalty.events import (
    ADJUSTED,
    CLAIMED,
    MERGED,
    REDEEMED,
    REFUNDED,
    Event,
    canonical,
    derived_id,
)
from ..sync.wire import REFUSED, Incoming, chain
from . import store_tags
from .store_predict import PredictionStore
from .store_readmodel import CrmStore

HQ_TERMINAL = "HQ"
# Incoming's first ten fields are these, in this order; the digest comes from the chain.
EVENT_COLS = ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body", "digest")
assert Incoming._fields[:10] == EVENT_COLS[:10]


class HqStoreError(Exception):
    """A refusal decided by stored state (mapped to an HTTP status by the app)."""

    code = "conflict"


class GapError(HqStoreError):
    """The batch does not start at the next sequence HQ expects."""

    code = "gap"

    def __init__(self, expected: int):
        super().__init__(f"sequence gap: HQ expects seq {expected} next")
        self.expected = expected


class QuarantineError(HqStoreError):
    """The same (terminal, seq) arrived with different content; kept aside, never applied."""

    code = "quarantined"

    def __init__(self, terminal: str, seqs: Sequence[int]):
        first = f" (seq {seqs[0]}..{seqs[-1]})" if seqs else ""
        super().__init__(f"terminal {terminal} is quarantined: content differs from what HQ holds{first}")
        self.seqs = list(seqs)


class EnrollRefused(HqStoreError):
    """A one-time code that is unknown, used, or does not fit the till's ids."""

    code = "enroll_refused"


class BadChain(HqStoreError):
    """The pushed events do not hash to the ledger hash the till sent: nothing is stored."""

    code = "bad_chain"


class CursorGone(HqStoreError):
    """The pull cursor is older than the feed keeps."""

    code = "cursor_gone"


@dataclass(frozen=True)
class TerminalRow:
    """A terminal enrolled at HQ."""

    id: str
    store: str
    public_key: str
    acked: int
    last_seen: str | None
    clock_offset_s: float | None
    quarantined: bool


@dataclass
class IngestResult:
    """What one ingest did."""

    acked: int
    inserted: int = 0
    duplicates: int = 0
    adjustments: list[Event] = field(default_factory=list)
    refused: int = 0  # events that break the event rules: quarantined, their positions taken
    touched: list[str] = field(default_factory=list)  # members HQ wrote events for besides the batch's


@dataclass(frozen=True)
class FeedRow:
    """One feed entry as stored."""

    seq: int
    kind: str
    key: str
    payload: dict[str, Any]


@dataclass
class FeedPage:
    """A page of the feed, read in one snapshot with what is needed to build member snapshots."""

    rows: list[FeedRow]
    watermark: int
    events: dict[str, list[Event]]
    members: dict[str, dict[str, Any]]
    merged: dict[str, str] = field(default_factory=dict)  # alias -> survivor
    # Segment tags and hints per member (`member_tags`), and the newest complete refresh's as-of.
    crm: dict[str, dict[str, Any]] = field(default_factory=dict)
    tags_as_of: str | None = None


Compensate = Callable[[str, list[Event]], Event | None]


class HqStore(Protocol):
    """What the HQ service needs from storage."""

    def close(self) -> None: ...
    def create_code(self, code: str, store: str, terminal: str | None, now: dt.datetime) -> None: ...
    def enroll(self, code: str, *, terminal: str | None, store: str | None, public_key: str,
               now: dt.datetime) -> TerminalRow: ...
    def terminal(self, terminal_id: str) -> TerminalRow | None: ...
    def terminals(self) -> list[TerminalRow]: ...
    def remove_terminal(self, terminal_id: str) -> bool: ...
    def note_request(self, terminal_id: str, nonce: str, time_ms: int, now: dt.datetime,
                     offset_s: float, window_s: int) -> bool: ...
    def ingest(self, terminal_id: str, events: Sequence[Incoming], members: Sequence[dict[str, Any]],
               now: dt.datetime, compensate: Compensate, *, tip: str | None = None) -> IngestResult: ...
    def feed_page(self, terminal_id: str, cursor: int, limit: int) -> FeedPage: ...
    def put_feed(self, kind: str, key: str, payload: dict[str, Any], now: dt.datetime) -> int: ...
    def feed_entry(self, key: str) -> dict[str, Any] | None: ...
    def publish_program(self, source: dict[str, Any], now: dt.datetime) -> int: ...
    def program(self) -> tuple[int, dict[str, Any]] | None: ...
    def add_member_key(self, kid: str, public_hex: str, private_pem: str | None, now: dt.datetime) -> None: ...
    def member_keys(self) -> dict[str, str]: ...
    def signing_key(self) -> str | None: ...
    def authorize(self, terminal_id: str, member: str, cost: int, after: int, pending: int, grant: str,
                  now: dt.datetime, expires: dt.datetime) -> tuple[bool, int]: ...
    def holds(self, member: str, now: dt.datetime) -> int: ...
    def erase(self, member: str, now: dt.datetime) -> None: ...
    def member_by_phone(self, phone: str) -> str | None: ...
    def revoke(self, member: str, before: dt.datetime, now: dt.datetime) -> None: ...
    def prune_feed(self, kinds: Sequence[str], before: dt.datetime) -> int: ...
    def member_events(self, member: str) -> list[Event]: ...
    def events(self, after: int = 0, limit: int = 1000) -> list[tuple[int, Event]]: ...
    def balances(self) -> dict[str, int]: ...
    def stats(self) -> dict[str, Any]: ...
    def alerts(self) -> list[dict[str, Any]]: ...
    def quarantine(self) -> list[dict[str, Any]]: ...
    # the CRM read model (store_readmodel.py)
    def rebuild_crm(self, *, chunk: int = 20000, progress: Any = None, swap: bool = True) -> Any: ...
    def verify_crm(self, *, chunk: int = 20000, progress: Any = None) -> Any: ...
    def import_members(self, externals: Sequence[str], now: dt.datetime) -> tuple[dict[str, str], int]: ...
    def crm_member(self, *, member: str | None = None, phone: str | None = None,
                   external: str | None = None) -> dict[str, Any] | None: ...
    def crm_windows(self, member: str, today: int, windows: Sequence[int]) -> dict[int, tuple[int, int]]: ...
    def crm_sales(self, member: str, limit: int = 50) -> list[dict[str, Any]]: ...
    # stored predictions (store_predict.py)
    def history_columns(self, before_day: int) -> Iterator[list[tuple[Any, ...]]]: ...
    def start_run(self, as_of: dt.date, as_of_day: int, model_version: str, fitted_at: dt.datetime,
                  params: dict[str, Any]) -> int: ...
    def put_predictions(self, rows: Sequence[Sequence[Any]]) -> None: ...
    def finish_run(self, run: int, members: int) -> None: ...
    def latest_run(self) -> dict[str, Any] | None: ...
    def prediction_page(self, run: int, after: str, limit: int) -> list[dict[str, Any]]: ...
    def member_prediction(self, member: str) -> dict[str, Any] | None: ...


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def event_from_row(r: Sequence[Any]) -> Event:
    """An Event from a row selected as EVENT_COLS."""
    d = dict(zip(EVENT_COLS, r, strict=True))
    d["body"] = json.loads(d["body"])
    return Event.from_wire(d)


class NotAMember(LookupError):
    """No member by this id or phone number at head office."""


class SqlHqStore(CrmStore, PredictionStore):
    """The SQL shared by both backends. Subclasses provide `_tx` and the bulk hooks."""

    FOR_UPDATE = ""

    # -- hooks ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def _stage(self, c: Any, events: Sequence[Incoming], digests: Sequence[str]) -> None:
        """Put the batch (each event with its digest) in the (empty) temporary `staging` table:
        the one backend-specific bulk step."""
        raise NotImplementedError  # pragma: no cover

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        """A `column IN (...)` condition and its parameters."""
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _x(self, c: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        c.execute(sql, params)
        return c

    def _many(self, c: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            c.executemany(sql, rows)

    # -- counters and feed ---------------------------------------------------------------

    def _bump(self, c: Any, name: str, by: int = 1) -> int:
        row = self._x(c, "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value", (by, name)).fetchone()
        return int(row[0])

    def _feed_put(self, c: Any, entries: Sequence[tuple[str, str, dict[str, Any]]], now: dt.datetime) -> int:
        """Upsert feed entries (kind, key, payload); a key keeps only its newest entry."""
        if not entries:
            return 0
        # Taking the counter row last serialises feed writers until commit, so a reader
        # never stores a cursor past an entry that commits later with a smaller seq.
        top = self._bump(c, "feed", len(entries))
        at = _iso(now)
        rows = [(key, top - len(entries) + i + 1, kind, canonical(p).decode() if p else "{}", at)
                for i, (kind, key, p) in enumerate(entries)]
        self._upsert_feed(c, rows)
        return top

    def _upsert_feed(self, c: Any, rows: Sequence[tuple[str, int, str, str, str]]) -> None:
        self._many(c, "INSERT INTO feed(key, seq, kind, payload, at) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT(key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
                      "payload = excluded.payload, at = excluded.at", rows)

    def put_feed(self, kind: str, key: str, payload: dict[str, Any], now: dt.datetime) -> int:
        """Publish one feed entry."""
        with self._tx() as c:
            return self._feed_put(c, [(kind, key, payload)], now)

    def feed_entry(self, key: str) -> dict[str, Any] | None:
        """The payload of the feed entry with this key, if any."""
        with self._tx(write=False) as c:
            row = self._x(c, "SELECT payload FROM feed WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- enrolment -----------------------------------------------------------------------

    def create_code(self, code: str, store: str, terminal: str | None, now: dt.datetime) -> None:
        """Record a one-time enrolment code for a store (and optionally a terminal id)."""
        with self._tx() as c:
            self._x(c, "INSERT INTO codes(code, store, terminal, created_at) VALUES (?, ?, ?, ?)",
                    (code, store, terminal, _iso(now)))

    def enroll(self, code: str, *, terminal: str | None, store: str | None, public_key: str,
               now: dt.datetime) -> TerminalRow:
        """Use a code once: register the terminal's key and decide its ids."""
        with self._tx() as c:
            row = self._x(c, "SELECT store, terminal, used_at FROM codes WHERE code = ?" + self.FOR_UPDATE,
                          (code,)).fetchone()
            if row is None or row[2] is not None:
                raise EnrollRefused("enrolment code unknown or already used")
            code_store, code_terminal = row[0], row[1]
            if store is not None and store != code_store:
                raise EnrollRefused(f"this code is for store {code_store}, the till belongs to {store}")
            if terminal and code_terminal and terminal != code_terminal:
                raise EnrollRefused(f"this code is for terminal {code_terminal}, the till is {terminal}")
            tid = terminal or code_terminal
            if tid is None:
                n = self._bump(c, "terminal")
                tid = f"{code_store}-T{n}"
            if tid == HQ_TERMINAL or self._x(c, "SELECT 1 FROM terminals WHERE id = ?", (tid,)).fetchone():
                raise EnrollRefused(f"terminal id {tid} is already enrolled")
            self._x(c, "INSERT INTO terminals(id, store, public_key, acked, enrolled_at, quarantined) "
                       "VALUES (?, ?, ?, 0, ?, 0)", (tid, code_store, public_key, _iso(now)))
            self._x(c, "UPDATE codes SET used_at = ?, terminal = ? WHERE code = ?", (_iso(now), tid, code))
            self._feed_put(c, [("terminal_key", f"terminal:{tid}",
                                {"terminal": tid, "store": code_store, "public_key": public_key})], now)
        t = self.terminal(tid)
        assert t is not None
        return t

    def terminal(self, terminal_id: str) -> TerminalRow | None:
        """An enrolled terminal."""
        with self._tx(write=False) as c:
            row = self._x(c, "SELECT id, store, public_key, acked, last_seen, clock_offset_s, quarantined "
                             "FROM terminals WHERE id = ?", (terminal_id,)).fetchone()
        return _terminal(row) if row else None

    def terminals(self) -> list[TerminalRow]:
        """Every enrolled terminal."""
        with self._tx(write=False) as c:
            rows = self._x(c, "SELECT id, store, public_key, acked, last_seen, clock_offset_s, quarantined "
                              "FROM terminals ORDER BY id").fetchall()
        return [_terminal(r) for r in rows]

    def remove_terminal(self, terminal_id: str) -> bool:
        """Forget a terminal's key, so it can no longer push or pull; its events stay. False if unknown."""
        with self._tx() as c:
            gone = self._x(c, "DELETE FROM terminals WHERE id = ?", (terminal_id,)).rowcount
        return bool(gone)

    def note_request(self, terminal_id: str, nonce: str, time_ms: int, now: dt.datetime,
                     offset_s: float, window_s: int) -> bool:
        """Remember a request's nonce (False: seen before, a replay) and the terminal's clock."""
        now_ms = int(now.timestamp() * 1000)
        with self._tx() as c:
            cur = self._x(c, "INSERT INTO nonces(terminal, nonce, at_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                          (terminal_id, nonce, time_ms))
            if cur.rowcount != 1:
                return False
            self._x(c, "UPDATE terminals SET last_seen = ?, clock_offset_s = ? WHERE id = ?",
                    (_iso(now), offset_s, terminal_id))
            if time_ms % 64 == 0:  # now and then, forget nonces that the time window refuses anyway
                self._x(c, "DELETE FROM nonces WHERE at_ms < ?", (now_ms - 2 * window_s * 1000,))
        return True

    # -- ingest --------------------------------------------------------------------------

    def ingest(self, terminal_id: str, events: Sequence[Incoming], members: Sequence[dict[str, Any]],
               now: dt.datetime, compensate: Compensate, *, tip: str | None = None) -> IngestResult:
        """Apply one batch in one transaction: idempotent on (terminal, seq), gaps refused.

        Each position's digest is the till's ledger hash, chained from the digest HQ holds
        for the position before the batch; `tip` (the till's hash of the last event), when
        sent, must equal the end of that chain, or nothing is stored (BadChain).
        """
        with self._tx() as c:
            acked = self._lock_terminal(c, terminal_id, events[0].seq)
            result, quarantined = self._ingest_locked(c, terminal_id, acked, events, members, now, compensate, tip)
        if quarantined:  # committed above: the evidence is kept, then the push is refused
            raise QuarantineError(terminal_id, quarantined)
        return result

    def _lock_terminal(self, c: Any, terminal_id: str, first: int) -> int:
        """Lock the terminal's row for this push and return its acked seq (quarantine and gaps refused)."""
        row = self._x(c, "SELECT acked, quarantined FROM terminals WHERE id = ?" + self.FOR_UPDATE,
                      (terminal_id,)).fetchone()
        acked, blocked = int(row[0]), bool(row[1])
        if blocked:
            raise QuarantineError(terminal_id, [])
        if first > acked + 1:
            raise GapError(acked + 1)
        return acked

    def _ingest_locked(self, c: Any, terminal_id: str, acked: int, events: Sequence[Incoming],
                       members: Sequence[dict[str, Any]], now: dt.datetime, compensate: Compensate,
                       tip: str | None) -> tuple[IngestResult, list[int]]:
        """The body of `ingest` once the terminal is locked: (result, quarantined seqs)."""
        first, last = events[0].seq, events[-1].seq
        held = dict(self._x(c, "SELECT seq, digest FROM positions WHERE terminal = ? AND seq BETWEEN ? AND ?",
                            (terminal_id, first - 1, min(last, acked))).fetchall())
        digests = chain(held.get(first - 1, ""), [e.content for e in events])
        if tip is not None and digests[-1] != tip:
            raise BadChain(f"the events do not hash to the till's ledger (seq {first}..{last})")
        n_old = max(0, min(last, acked) - first + 1)
        bad = [i for i in range(n_old) if held.get(events[i].seq) != digests[i]]
        if bad:
            self._quarantine(c, terminal_id, [(events[i], digests[i]) for i in bad], held, now)
            return IngestResult(acked=acked), [events[i].seq for i in bad]
        result = self._apply(c, terminal_id, events[n_old:], digests[n_old:], members, now, compensate)
        result.duplicates += n_old
        result.acked = max(acked, result.acked)
        return result, []

    def _quarantine(self, c: Any, terminal_id: str, bad: Sequence[tuple[Incoming, str]], held: dict[int, str],
                    now: dt.datetime) -> None:
        received = [canonical(dict(zip(EVENT_COLS, stored_row(e, d), strict=True))).decode() for e, d in bad]
        rows = [(terminal_id, e.seq, held.get(e.seq), text, _iso(now)) for (e, _), text in zip(bad, received, strict=True)]
        self._many(c, "INSERT INTO quarantine(terminal, seq, held_digest, received, at) VALUES (?, ?, ?, ?, ?)", rows)
        self._x(c, "UPDATE terminals SET quarantined = 1 WHERE id = ?", (terminal_id,))
        self._alert(c, "quarantine", terminal_id, None,
                    {"seqs": [e.seq for e, _ in bad][:50], "count": len(bad)}, now)

    def _refuse(self, c: Any, terminal_id: str, refused: Sequence[tuple[Incoming, str]], now: dt.datetime) -> None:
        """Events that break the event rules (`Incoming.problem`): each is kept aside in
        `quarantine` (its line as received and the reason) with an alert, and its position is
        taken with its digest, so the terminal's sequence moves past it and a resend compares
        equal. The rest of the batch is applied as usual: one bad event never stops a till."""
        self._many(c, "INSERT INTO positions(terminal, seq, event_id, digest) VALUES (?, ?, ?, ?)",
                   [(terminal_id, e.seq, refused_id(e), d) for e, d in refused])
        self._many(c, "INSERT INTO quarantine(terminal, seq, held_digest, received, at) VALUES (?, ?, ?, ?, ?)",
                   [(terminal_id, e.seq, None, canonical({"refused": e.problem, "line": e.content.decode()}).decode(),
                     _iso(now)) for e, _ in refused])
        for e, _ in refused:
            self._alert(c, "refused_event", terminal_id, None, {"seq": e.seq, "reason": e.problem}, now)

    # -- claims at the merge (rule 3 across tills, rule 7's compensation) ---------------------

    def _merge_claims(self, c: Any, terminal_id: str, result: IngestResult, claims: Sequence[Incoming],
                      now: dt.datetime) -> None:
        """Receipt claims the tills could not settle alone. A claim's event id is derived from its
        token, so two tills claiming one QR offline produce one id and HQ keeps the first: the
        other member is compensated (+stamps, `double_claim` alert) for what the cashier promised.
        A void of a guest sale revokes its claim (feed `claim_revoked`); a claim of it already
        held or arriving later is taken back (`claim_of_refunded` alert), never below zero."""
        for e in claims:
            body = json.loads(e.body)
            if e.kind == REFUNDED:
                token = body.get("claim_token")
                if type(token) is not str:
                    continue
                self._feed_put(c, [("claim_revoked", f"claim:{token}",
                                    {"token": token, "terminal": e.terminal, "receipt": body.get("receipt")})], now)
                held = self._x(c, "SELECT member, stamps FROM events WHERE id = ?",
                               (derived_id("claim", token),)).fetchone()
                if held is not None and held[0] is not None:
                    self._take_back_claim(c, terminal_id, token, held[0], int(held[1]), result, now)
                continue
            token = body.get("token")
            held = self._x(c, "SELECT terminal, seq, member FROM events WHERE id = ?", (e.id,)).fetchone()
            if held is None or e.member is None:
                continue
            if (held[0], int(held[1])) != (e.terminal, e.seq):
                if held[2] != e.member:  # the same QR claimed for another member elsewhere
                    adj = Event(derived_id("double_claim", e.id, e.member), ADJUSTED, now, e.member, e.stamps,
                                "double_claim", {"reason": "double_claim", "token": token, "kept": held[2],
                                                 "claim": e.id})
                    self._hq_adjust(c, adj, result)
                    self._alert(c, "double_claim", terminal_id, e.member,
                                {"token": token, "kept_for": held[2], "compensated": e.stamps, "event": adj.id}, now)
                continue
            revoked = self._x(c, "SELECT 1 FROM feed WHERE key = ? AND kind = 'claim_revoked'",
                              (f"claim:{token}",)).fetchone()
            if revoked is not None:
                self._take_back_claim(c, terminal_id, str(token), e.member, e.stamps, result, now)

    def _take_back_claim(self, c: Any, terminal_id: str, token: str, member: str, stamps: int,
                         result: IngestResult, now: dt.datetime) -> None:
        eid = derived_id("claim_void", token, member)
        if self._x(c, "SELECT 1 FROM events WHERE id = ?", (eid,)).fetchone():
            return
        row = self._x(c, "SELECT balance FROM balances WHERE member = ?", (member,)).fetchone()
        take = min(stamps, max(int(row[0]) if row else 0, 0))
        adj = Event(eid, ADJUSTED, now, member, -take, "claim_of_refunded",
                    {"reason": "claim_of_refunded", "token": token, "wanted": stamps, "uncollected": stamps - take})
        self._hq_adjust(c, adj, result)
        self._alert(c, "claim_of_refunded", terminal_id, member,
                    {"token": token, "taken": take, "uncollected": stamps - take, "event": eid}, now)

    def _hq_adjust(self, c: Any, adj: Event, result: IngestResult) -> None:
        """Append an HQ adjustment and move the member's running balance with it."""
        assert adj.member is not None
        self._insert_hq_event(c, adj)
        self._x(c, "INSERT INTO balances(member, balance) VALUES (?, ?) ON CONFLICT(member) DO UPDATE "
                   "SET balance = balances.balance + excluded.balance", (adj.member, adj.stamps))
        result.adjustments.append(adj)
        result.touched.append(adj.member)

    # -- one phone, two member ids: merged at HQ ---------------------------------------------

    def _merge_phones(self, c: Any, terminal_id: str, rows: Sequence[dict[str, Any]], result: IngestResult,
                      now: dt.datetime) -> None:
        """Members enrolled with the same phone at tills that were offline become one: the earlier
        enrolment survives, the other id becomes its alias (`merges`, a `member.merged` event, a
        `member_merged` alert), and an alias's stamps, then and whenever more arrive from a till
        that has not heard yet, move to the survivor. Tills learn it from the alias's snapshot."""
        for phone in sorted({m["phone"] for m in rows if m.get("phone")}):
            found = self._x(c, "SELECT id, enrolled_at FROM members WHERE phone = ? AND id NOT IN "
                               "(SELECT alias FROM merges)", (phone,)).fetchall()
            if len(found) < 2:
                continue
            ordered = sorted(found, key=lambda r: (r[1] or "9999", r[0]))
            survivor = ordered[0][0]
            for alias, _ in ordered[1:]:
                self._x(c, "INSERT INTO merges(alias, into_id, at) VALUES (?, ?, ?)", (alias, survivor, _iso(now)))
                self._fold(c, alias, survivor, result, now)
                self._alert(c, "member_merged", terminal_id, alias, {"alias": alias, "into": survivor}, now)
        for alias, survivor in self._x(c, "SELECT m.alias, m.into_id FROM merges m JOIN balances b "
                                          "ON b.member = m.alias WHERE b.balance <> 0").fetchall():
            self._fold(c, alias, survivor, result, now)

    def _fold(self, c: Any, alias: str, survivor: str, result: IngestResult, now: dt.datetime) -> None:
        """Move an alias's whole balance to its survivor with a pair of HQ events."""
        row = self._x(c, "SELECT balance FROM balances WHERE member = ?", (alias,)).fetchone()
        stamps = int(row[0]) if row else 0
        last = self._x(c, "SELECT max(gseq) FROM events WHERE member = ?", (alias,)).fetchone()[0]
        cause = f"{alias}:{last}"
        self._hq_adjust(c, Event(derived_id("merge", cause), MERGED, now, alias, -stamps, survivor,
                                 {"into": survivor, "stamps": stamps}), result)
        if stamps:
            self._hq_adjust(c, Event(derived_id("merge-in", cause), ADJUSTED, now, survivor, stamps, "merge",
                                     {"reason": "merge", "from": alias, "stamps": stamps}), result)

    # -- online authorisation of redemptions (docs/SYNC.md) --------------------------------

    def authorize(self, terminal_id: str, member: str, cost: int, after: int, pending: int, grant: str,
                  now: dt.datetime, expires: dt.datetime) -> tuple[bool, int]:
        """Hold `cost` stamps of `member` for a redemption at `terminal_id` when the merged
        balance allows it: (granted, available before it). Available = HQ's balance + the
        terminal's `pending` stamps after `after` that HQ does not hold yet - stamps still held
        for other grants. Holds are taken one member at a time (the balance row is locked)."""
        with self._tx() as c:
            self._x(c, "DELETE FROM holds WHERE expires < ?", (_iso(now),))
            row = self._x(c, "SELECT balance FROM balances WHERE member = ?" + self.FOR_UPDATE, (member,)).fetchone()
            held_here = self._x(c, "SELECT coalesce(sum(stamps), 0) FROM events WHERE member = ? AND terminal = ? "
                                   "AND seq > ?", (member, terminal_id, after)).fetchone()[0]
            on_hold = self._x(c, "SELECT coalesce(sum(cost), 0) FROM holds WHERE member = ?", (member,)).fetchone()[0]
            available = (int(row[0]) if row else 0) + pending - int(held_here) - int(on_hold)
            if available < cost:
                return False, available
            self._x(c, "INSERT INTO holds(grant_id, member, terminal, cost, expires, at) VALUES (?, ?, ?, ?, ?, ?)",
                    (grant, member, terminal_id, cost, _iso(expires), _iso(now)))
        return True, available

    def holds(self, member: str, now: dt.datetime) -> int:
        """Stamps of `member` held for online-authorised redemptions not yet received."""
        with self._tx(write=False) as c:
            return int(self._x(c, "SELECT coalesce(sum(cost), 0) FROM holds WHERE member = ? AND expires >= ?",
                               (member, _iso(now))).fetchone()[0])

    def _release(self, c: Any, grants: Sequence[str]) -> None:
        """The redemptions of these grants arrived: their stamps are in the balance now."""
        if grants:
            cond, params = self._any("grant_id", list(grants))
            self._x(c, f"DELETE FROM holds WHERE {cond}", params)

    def _alert(self, c: Any, kind: str, terminal: str | None, member: str | None, detail: dict[str, Any],
               now: dt.datetime) -> None:
        self._x(c, "INSERT INTO alerts(kind, terminal, member, detail, at) VALUES (?, ?, ?, ?, ?)",
                (kind, terminal, member, canonical(detail).decode(), _iso(now)))

    def _insert_events(self, c: Any) -> tuple[int, list[tuple[str, int]]]:
        """Insert `staging` into events (ON CONFLICT (id) DO NOTHING) and add the stamps of the
        events really inserted to the running balances: (inserted, [(member, new balance)])."""
        cols = ", ".join(EVENT_COLS)
        # WHERE true: SQLite needs it to parse ON CONFLICT after INSERT ... SELECT.
        inserted = self._x(c, f"INSERT INTO events({cols}) SELECT {cols} FROM staging WHERE true ORDER BY seq "
                              "ON CONFLICT(id) DO NOTHING").rowcount
        # Only events really inserted move balances: an id kept from another terminal's copy
        # is stored under that terminal's position, so the join on (id, terminal, seq) skips it.
        balances = self._x(
            c, "INSERT INTO balances(member, balance) SELECT s.member, sum(s.stamps) FROM staging s "
               "JOIN events e ON e.id = s.id AND e.terminal = s.terminal AND e.seq = s.seq "
               "WHERE s.member IS NOT NULL GROUP BY s.member ORDER BY s.member "
               "ON CONFLICT(member) DO UPDATE SET balance = balances.balance + excluded.balance "
               "RETURNING member, balance").fetchall() if inserted else []
        return inserted, [(r[0], int(r[1])) for r in balances]

    def _apply(self, c: Any, terminal_id: str, new: Sequence[Incoming], digests: Sequence[str],
               members: Sequence[dict[str, Any]], now: dt.datetime, compensate: Compensate) -> IngestResult:
        """Store new events with set operations over `staging`: a handful of statements per batch."""
        if not new:
            return IngestResult(acked=0)
        last = new[-1].seq
        refused = [(e, d) for e, d in zip(new, digests, strict=True) if e.problem is not None]
        if refused:
            self._refuse(c, terminal_id, refused, now)
            kept = [i for i, e in enumerate(new) if e.problem is None]
            new, digests = [new[i] for i in kept], [digests[i] for i in kept]
        self._stage(c, new, digests)
        self._x(c, "INSERT INTO positions(terminal, seq, event_id, digest) SELECT terminal, seq, id, digest "
                   "FROM staging")
        inserted, balances = self._insert_events(c)
        self._release(c, grants_of(new))
        result = IngestResult(acked=last, inserted=inserted, duplicates=len(new) - inserted, refused=len(refused))
        self._finish(c, terminal_id, result, [m for m, b in balances if int(b) < 0], members, now, compensate,
                     staged=True, claims=claims_of(new))
        stored = new if inserted == len(new) else self._own_events(c, terminal_id, new)
        self._crm_after_ingest(c, stored, result.adjustments, [m["id"] for m in members])
        return result

    def _own_events(self, c: Any, terminal_id: str, events: Sequence[Incoming]) -> list[Incoming]:
        """The events stored under this terminal's own positions: an id HQ already held (the
        same claim made on the phone, the same derived award from another till) is left out,
        so the read model counts it once, as the balances do."""
        own: set[str] = set()
        ids = [e.id for e in events]
        for lo in range(0, len(ids), 5000):
            cond, params = self._any("id", ids[lo:lo + 5000])
            own |= {r[0] for r in self._x(c, f"SELECT id FROM events WHERE {cond} AND terminal = ?",
                                          [*params, terminal_id]).fetchall()}
        return [e for e in events if e.id in own]

    def _finish(self, c: Any, terminal_id: str, result: IngestResult, negative: Sequence[str],
                members: Sequence[dict[str, Any]], now: dt.datetime, compensate: Compensate, *,
                staged: bool, claims: Sequence[Incoming] = ()) -> None:
        """The once-per-batch steps after the events are in: claims found at the merge, PII,
        overdrafts of the members in `negative` (balance below zero after the batch), the feed,
        and the terminal's acked."""
        self._merge_claims(c, terminal_id, result, claims, now)
        for m in members:
            if REFUSED in m:  # a PII row HQ cannot store: the events are taken, the row is not
                self._alert(c, "refused_member_row", terminal_id, m["id"], {"reason": m[REFUSED]}, now)
        members = [m for m in members if REFUSED not in m]
        pii = sorted({m["id"] for m in members})
        erased: set[str] = set()
        if pii:
            cond, params = self._any("member", pii)
            erased |= {r[0] for r in self._x(c, f"SELECT member FROM erasures WHERE {cond}", params).fetchall()}
        live = [m for m in members if m["id"] not in erased]
        self._many(c, "INSERT INTO members(id, phone, name, email, birthday, origin, enrolled_at, updated_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                      "phone = coalesce(excluded.phone, members.phone), name = coalesce(excluded.name, members.name), "
                      "email = coalesce(excluded.email, members.email), "
                      "birthday = coalesce(excluded.birthday, members.birthday), updated_at = excluded.updated_at",
                   [(m["id"], m.get("phone"), m.get("name"), m.get("email"), m.get("birthday"),
                     m.get("origin", "till"), m.get("enrolled_at"), _iso(now)) for m in sorted(live, key=lambda m: m["id"])])
        self._merge_phones(c, terminal_id, live, result, now)
        for member in sorted(negative):
            adj = compensate(member, self._member_events(c, member))
            if adj is not None:
                self._insert_hq_event(c, adj)
                self._x(c, "UPDATE balances SET balance = balance + ? WHERE member = ?", (adj.stamps, member))
                self._alert(c, "overdraft", terminal_id, member, {"deficit": adj.stamps, "event": adj.id}, now)
                result.adjustments.append(adj)
        self._feed_members(c, [m for m in [*pii, *result.touched] if m not in erased], now, staged=staged)
        if staged:
            self._x(c, "DELETE FROM staging")  # a second batch in the same transaction must not see these
        self._x(c, "UPDATE terminals SET acked = ? WHERE id = ?", (result.acked, terminal_id))

    def _feed_members(self, c: Any, extra: Sequence[str], now: dt.datetime, *, staged: bool = True) -> None:
        """A member feed entry for every member the batch touched (from `staging`) and `extra`.
        An erased member's entry carries balance and events only (no members row, so no PII).
        With `staged` False, `touched` already holds the batch's members (filled chunk by chunk)."""
        if staged:
            self._x(c, "DELETE FROM touched")
            self._x(c, "INSERT INTO touched(member) SELECT DISTINCT member FROM staging WHERE member IS NOT NULL")
        self._many(c, "INSERT INTO touched(member) VALUES (?) ON CONFLICT DO NOTHING", [(m,) for m in extra])
        n = int(self._x(c, "SELECT count(*) FROM touched").fetchone()[0])
        if not n:
            return
        # Taking the counter row last serialises feed writers until commit (see _feed_put).
        base = self._bump(c, "feed", n) - n
        self._x(c, "INSERT INTO feed(key, seq, kind, payload, at) "
                   "SELECT 'member:' || member, ? + row_number() OVER (ORDER BY member), 'member', '{}', ? "
                   "FROM touched WHERE true ON CONFLICT(key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
                   "payload = excluded.payload, at = excluded.at", (base, _iso(now)))
        self._x(c, "DELETE FROM touched")

    def _insert_hq_event(self, c: Any, e: Event) -> None:
        seq = self._bump(c, "hq")
        e = e.with_position(seq=seq, terminal=HQ_TERMINAL, store=HQ_TERMINAL)
        w = e.to_wire()
        import hashlib

        digest = hashlib.sha256(canonical(w)).hexdigest()
        self._x(c, f"INSERT INTO events({', '.join(EVENT_COLS)}) VALUES ({', '.join('?' * len(EVENT_COLS))}) "
                   "ON CONFLICT(id) DO NOTHING",
                (e.id, e.terminal, e.store, e.seq, e.kind, e.member, w["at"], e.stamps, e.ref,
                 canonical(e.body).decode(), digest))

    def _member_events(self, c: Any, member: str) -> list[Event]:
        rows = self._x(c, f"SELECT {', '.join(EVENT_COLS)} FROM events WHERE member = ? ORDER BY gseq",
                       (member,)).fetchall()
        return [event_from_row(r) for r in rows]

    def events(self, after: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        """Every event at HQ in merge order, paged by HQ's global sequence (for exports)."""
        with self._tx(write=False) as c:
            rows = self._x(c, f"SELECT gseq, {', '.join(EVENT_COLS)} FROM events WHERE gseq > ? "
                              "ORDER BY gseq LIMIT ?", (after, limit)).fetchall()
        return [(int(r[0]), event_from_row(r[1:])) for r in rows]

    def member_events(self, member: str) -> list[Event]:
        """A member's events at HQ in merge order."""
        with self._tx(write=False) as c:
            return self._member_events(c, member)

    def balances(self) -> dict[str, int]:
        """Every member's merged balance (the running sum kept at ingest)."""
        with self._tx(write=False) as c:
            return {r[0]: int(r[1]) for r in self._x(c, "SELECT member, balance FROM balances").fetchall()}

    # -- the pull feed -------------------------------------------------------------------

    def feed_page(self, terminal_id: str, cursor: int, limit: int) -> FeedPage:
        """Feed entries after `cursor`, with member events and PII, all from one snapshot."""
        with self._tx(write=False) as c:
            floor = int(self._x(c, "SELECT value FROM counters WHERE name = 'floor'").fetchone()[0])
            if 0 < cursor < floor:
                raise CursorGone(f"cursor {cursor} is older than the feed keeps ({floor}); pull from 0")
            w = self._x(c, "SELECT acked FROM terminals WHERE id = ?", (terminal_id,)).fetchone()
            rows = [FeedRow(int(r[0]), r[1], r[2], json.loads(r[3])) for r in self._x(
                c, "SELECT seq, kind, key, payload FROM feed WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, limit)).fetchall()]
            wanted = sorted({r.key.split(":", 1)[1] for r in rows if r.kind == "member"})
            events: dict[str, list[Event]] = {m: [] for m in wanted}
            members: dict[str, dict[str, Any]] = {}
            if wanted:
                cond, params = self._any("member", wanted)
                for r in self._x(c, f"SELECT {', '.join(EVENT_COLS)} FROM events WHERE {cond} ORDER BY gseq",
                                 params).fetchall():
                    e = event_from_row(r)
                    events[e.member or ""].append(e)
                cond, params = self._any("id", wanted)
                for r in self._x(c, f"SELECT id, phone, name, email, birthday, origin, enrolled_at FROM members "
                                    f"WHERE {cond}", params).fetchall():
                    members[r[0]] = dict(zip(("id", "phone", "name", "email", "birthday", "origin", "enrolled_at"),
                                             r, strict=True))
            merged: dict[str, str] = {}
            if wanted:
                merged = self._merges_of(c, wanted, events)
            crm, tags_as_of = store_tags.feed_tags(self, c, wanted)
        return FeedPage(rows, int(w[0]) if w else 0, events, members, merged, crm, tags_as_of)

    def _merges_of(self, c: Any, wanted: Sequence[str], events: dict[str, list[Event]]) -> dict[str, str]:
        """alias -> survivor among `wanted`; a survivor's events get its aliases' added (history
        joined: the alias's stamps net to zero through its `member.merged` event)."""
        cond_a, params_a = self._any("alias", list(wanted))
        cond_i, params_i = self._any("into_id", list(wanted))
        pairs = self._x(c, f"SELECT alias, into_id FROM merges WHERE {cond_a} OR {cond_i}",
                        [*params_a, *params_i]).fetchall()
        aliases: dict[str, list[str]] = {}
        for alias, into in pairs:
            if into in events:
                aliases.setdefault(into, []).append(alias)
        for into, lst in aliases.items():
            cond, params = self._any("member", [into, *lst])
            events[into] = [event_from_row(r) for r in self._x(
                c, f"SELECT {', '.join(EVENT_COLS)} FROM events WHERE {cond} ORDER BY gseq", params).fetchall()]
        return {alias: into for alias, into in pairs}

    def prune_feed(self, kinds: Sequence[str], before: dt.datetime) -> int:
        """Drop old entries of these kinds; cursors below the new floor get 410. Returns the floor."""
        with self._tx() as c:
            cond, params = self._any("kind", list(kinds))
            row = self._x(c, f"SELECT max(seq) FROM feed WHERE {cond} AND at < ?", [*params, _iso(before)]).fetchone()
            if row and row[0] is not None:
                self._x(c, f"DELETE FROM feed WHERE {cond} AND at < ?", [*params, _iso(before)])
                self._x(c, "UPDATE counters SET value = ? WHERE name = 'floor' AND value < ?", (row[0], row[0]))
            return int(self._x(c, "SELECT value FROM counters WHERE name = 'floor'").fetchone()[0])

    # -- program, keys, erasure, revocation ---------------------------------------------

    def publish_program(self, source: dict[str, Any], now: dt.datetime) -> int:
        """Store a new program version and put it in the feed."""
        with self._tx() as c:
            version = self._bump(c, "program")
            src = {**source, "program": {**source.get("program", {}), "version": version}}
            self._x(c, "INSERT INTO programs(version, source, at) VALUES (?, ?, ?)",
                    (version, canonical(src).decode(), _iso(now)))
            self._feed_put(c, [("program", "program", {"version": version, "source": src})], now)
        return version

    def program(self) -> tuple[int, dict[str, Any]] | None:
        """The newest program version and its source."""
        with self._tx(write=False) as c:
            row = self._x(c, "SELECT version, source FROM programs ORDER BY version DESC LIMIT 1").fetchone()
        return (int(row[0]), json.loads(row[1])) if row else None

    def add_member_key(self, kid: str, public_hex: str, private_pem: str | None, now: dt.datetime) -> None:
        """Trust a member-card key (HQ's own, with its private half, or a till's former one)."""
        with self._tx() as c:
            if self._x(c, "SELECT 1 FROM member_keys WHERE kid = ?", (kid,)).fetchone():
                return
            self._x(c, "INSERT INTO member_keys(kid, public_key, private_pem, at) VALUES (?, ?, ?, ?)",
                    (kid, public_hex, private_pem, _iso(now)))
            self._feed_put(c, [("member_key", f"memberkey:{kid}", {"kid": kid, "public_key": public_hex})], now)

    def member_keys(self) -> dict[str, str]:
        """Every trusted member-card public key by key id."""
        with self._tx(write=False) as c:
            return dict(self._x(c, "SELECT kid, public_key FROM member_keys ORDER BY at").fetchall())

    def signing_key(self) -> str | None:
        """HQ's member-signing private key (PEM), if it has one yet."""
        with self._tx(write=False) as c:
            row = self._x(c, "SELECT private_pem FROM member_keys WHERE private_pem IS NOT NULL "
                             "ORDER BY at LIMIT 1").fetchone()
        return row[0] if row else None

    def member_by_phone(self, phone: str) -> str | None:
        """The id of the member with this E.164 phone number, if HQ has one."""
        with self._tx(write=False) as c:
            row = self._x(c, "SELECT id FROM members WHERE phone = ? ORDER BY id LIMIT 1", (phone,)).fetchone()
        return str(row[0]) if row else None

    def erase(self, member: str, now: dt.datetime) -> None:
        """Scrub a member's PII for good; tills learn it from the feed and never re-create it.

        NotAMember when HQ knows no member by this id (no row, no event, no read-model row, no
        earlier erasure):
        saying "erased" for a mistyped id would leave the real member's data in place."""
        with self._tx() as c:
            known = (self._x(c, "SELECT 1 FROM members WHERE id = ?", (member,)).fetchone()
                     or self._x(c, "SELECT 1 FROM erasures WHERE member = ?", (member,)).fetchone()
                     or self._x(c, "SELECT 1 FROM events WHERE member = ? LIMIT 1", (member,)).fetchone()
                     or self._x(c, "SELECT 1 FROM crm_members WHERE member = ?", (member,)).fetchone())
            if not known:
                raise NotAMember(f"{member!r} is not a member known at head office")
            self._x(c, "DELETE FROM members WHERE id = ?", (member,))
            self._crm_erase(c, member)
            store_tags.forget(self, c, member)  # hints come from personal data (a birthday, purchases)
            self._x(c, "INSERT INTO erasures(member, at) VALUES (?, ?) ON CONFLICT DO NOTHING", (member, _iso(now)))
            # Its own feed key: under `member:` a later snapshot of the member (their balance
            # goes on) would replace the erasure before an offline till had seen it.
            self._feed_put(c, [("erased", f"erased:{member}", {"member": member})], now)
        self._after_erase()

    def _after_erase(self) -> None:
        """Backend hook after an erasure committed (SQLite truncates its WAL)."""

    def revoke(self, member: str, before: dt.datetime, now: dt.datetime) -> None:
        """Revoke every card of a member issued up to `before`."""
        with self._tx() as c:
            self._feed_put(c, [("revoked", f"revoked:{member}", {"member": member, "before": _iso(before)})], now)

    # -- reports -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts for `hq stats`."""
        with self._tx(write=False) as c:
            def one(sql: str) -> int:
                return int(self._x(c, sql).fetchone()[0])
            out: dict[str, Any] = {
                "events": one("SELECT count(*) FROM events"),
                "sales": one("SELECT count(*) FROM events WHERE kind = 'sale.recorded'"),
                "members": one("SELECT count(*) FROM balances"),
                "quarantined": one("SELECT count(*) FROM quarantine"),
                "alerts": one("SELECT count(*) FROM alerts"),
                "adjustments": one("SELECT count(*) FROM events WHERE terminal = 'HQ'"),
            }
        out["terminals"] = [
            {"terminal": t.id, "store": t.store, "acked": t.acked, "last_seen": t.last_seen,
             "clock_offset_s": t.clock_offset_s, "quarantined": t.quarantined}
            for t in self.terminals()
        ]
        return out

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert, oldest first."""
        with self._tx(write=False) as c:
            rows = self._x(c, "SELECT kind, terminal, member, detail, at FROM alerts ORDER BY id").fetchall()
        return [{"kind": r[0], "terminal": r[1], "member": r[2], "detail": json.loads(r[3]), "at": r[4]} for r in rows]

    def quarantine(self) -> list[dict[str, Any]]:
        """Every quarantined event, with the digest HQ holds for its position."""
        with self._tx(write=False) as c:
            rows = self._x(c, "SELECT terminal, seq, held_digest, received, at FROM quarantine ORDER BY id").fetchall()
        return [{"terminal": r[0], "seq": r[1], "held_digest": r[2], "received": json.loads(r[3]), "at": r[4]}
                for r in rows]


def slices(n: int, step: int = 200) -> Iterator[tuple[int, int]]:
    """(lo, hi) slices of range(n) for work done beside a thread that waits on the database:
    after each slice the GIL is given away (`time.sleep(0)`), so that thread gets it back at
    once when its answer arrives, rather than after the interpreter's switch interval (5 ms,
    several times per statement). Measured in process: chunks applied 10-15% faster on PostgreSQL."""
    for lo in range(0, n, step):
        yield lo, min(n, lo + step)
        time.sleep(0)


def claims_of(events: Sequence[Incoming]) -> list[Incoming]:
    """The claims and refunds among `events`, which the merge looks at again (`_merge_claims`)."""
    return [e for e in events if e.kind == CLAIMED or (e.kind == REFUNDED and '"claim_token":' in e.body)]


def grants_of(events: Sequence[Incoming]) -> list[str]:
    """The grants named by redemptions among `events` (authorised online by HQ)."""
    out = []
    for e in events:
        if e.kind == REDEEMED and '"grant":' in e.body:
            grant = json.loads(e.body).get("grant")
            if type(grant) is str:
                out.append(grant)
    return out


def refused_id(e: Incoming) -> str:
    """What a refused event's position records as its id: the id when it is fit to store,
    else a name derived from its content (a NUL cannot be stored in PostgreSQL text)."""
    if e.problem is not None and (e.problem.startswith("id:") or type(e.id) is not str):
        return "refused:" + hashlib.sha256(e.content).hexdigest()[:32]
    return e.id


def stored_row(e: Incoming, digest: str) -> tuple[Any, ...]:
    """An event as HQ stores it, in EVENT_COLS order: its checked fields, then its digest."""
    return (*e[:10], digest)


def _terminal(r: Sequence[Any]) -> TerminalRow:
    return TerminalRow(r[0], r[1], r[2], int(r[3]), r[4], None if r[5] is None else float(r[5]), bool(r[6]))


COUNTERS = ("feed", "hq", "program", "terminal", "floor")


def open_hq_store(url: str) -> HqStore:
    """Open HQ storage from a URL: sqlite:///rel.db, sqlite:////abs.db, sqlite:///:memory:, postgresql://..."""
    if url.startswith("sqlite://"):
        from .store_sqlite import SqliteHqStore

        # SQLAlchemy's convention: sqlite:///hq.db is relative, sqlite:////var/hq.db absolute.
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.removeprefix("sqlite://")
        return SqliteHqStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from .store_pg import PgHqStore

        return PgHqStore(url)
    raise ValueError(f"--db {url!r}: expected sqlite:///PATH or postgresql://...")
