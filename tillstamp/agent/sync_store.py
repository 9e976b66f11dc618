"""The till's side of sync: its own tables in the till database (migrations
"tillstamp.sync"), the `Outbox` the sync client talks to, the local view of rule 6, the
offline-redemption guard of rule 7, and `attach_sync`, which wires all that into a till.

Tables: sync_state (cursors, clock offset, last success), remote_members (HQ's snapshot of
a member with this terminal's watermark W), erasures, revocations, trusted keys, programs
from HQ, and parked batches. Every page from HQ is applied in one transaction together
with its cursor; the push cursor only moves forward, to what HQ acknowledged.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database, Migrations

from ..loyalty import events as ev
from ..loyalty import tokens
from ..loyalty.events import Event, canonical
from ..loyalty.offers import Tagging
from ..loyalty.program import OfflineCaps, Program, parse_program
from ..sync.client import RequestsTransport, RetryPolicy, SyncClient, SyncLoop, Transport, errors, p
from ..sync.wire import LedgerRow
from .keys import Keys
from .service import Grant, Refused, Service
from .store import MemberRow, Store

migrations = Migrations("tillstamp.sync")


@migrations()
def m001_sync(db: Database) -> None:
    db.execute("CREATE TABLE sync_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT")
    db.execute(
        """CREATE TABLE remote_members (member TEXT PRIMARY KEY, watermark INTEGER NOT NULL,
            balance INTEGER NOT NULL, tier TEXT, events TEXT NOT NULL, feed_seq INTEGER NOT NULL) STRICT"""
    )
    db.execute("CREATE TABLE erasures (member TEXT PRIMARY KEY, feed_seq INTEGER NOT NULL) STRICT")
    db.execute("CREATE TABLE revocations (member TEXT PRIMARY KEY, before TEXT NOT NULL) STRICT")
    db.execute("CREATE TABLE trusted_terminals (terminal TEXT PRIMARY KEY, store TEXT, public_key TEXT NOT NULL) STRICT")
    db.execute("CREATE TABLE trusted_member_keys (kid TEXT PRIMARY KEY, public_key TEXT NOT NULL) STRICT")
    db.execute("CREATE TABLE hq_programs (version INTEGER PRIMARY KEY, source TEXT NOT NULL) STRICT")
    db.execute(
        """CREATE TABLE parked (id INTEGER PRIMARY KEY AUTOINCREMENT, first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL, status INTEGER NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL,
            at TEXT NOT NULL, open INTEGER NOT NULL) STRICT"""
    )


@migrations()
def m002_claims_and_aliases(db: Database) -> None:
    db.execute("CREATE TABLE revoked_claims (token TEXT PRIMARY KEY, feed_seq INTEGER NOT NULL) STRICT")
    # member ids head office merged into another (one phone enrolled at two tills)
    db.execute("CREATE TABLE member_aliases (alias TEXT PRIMARY KEY, into_id TEXT NOT NULL) STRICT")


@migrations()
def m003_member_crm(db: Database) -> None:
    # Head office's segment tags and hints per member (the snapshot's `crm`), with their as-of.
    db.execute("""CREATE TABLE member_crm (member TEXT PRIMARY KEY, as_of TEXT NOT NULL, tags TEXT NOT NULL,
        hints TEXT NOT NULL, feed_seq INTEGER NOT NULL) STRICT""")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True)
class Exposure:
    """Rule 7 at this till now: stamps redeemed blind (since the last fresh pull) against the caps."""

    blind_total: int
    blind_max_member: int
    caps: OfflineCaps
    terminals: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the worst-case bounds the config promises."""
        n = max(self.terminals, 1)
        return {
            "redeemed_blind": self.blind_total,
            "redeemed_blind_max_member": self.blind_max_member,
            "cap_per_member": self.caps.max_per_member,
            "cap_per_terminal": self.caps.max_per_terminal,
            "terminals": n,
            "worst_overdraft_per_member": (n - 1) * self.caps.max_per_member,
            "worst_overdraft_total": n * self.caps.max_per_terminal,
            "max_offline_hours": self.caps.max_offline_hours,
        }


class SyncStore:
    """The till's sync tables over its `Store`; implements the client's `Outbox`."""

    def __init__(self, store: Store, *, keys: Keys | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self.store = store
        self.keys = keys
        self.clock = clock
        migrations.apply(store.db)
        self.terminal = store.get_meta("terminal") or ""
        self._path = next((r[2] for r in store.conn.execute("PRAGMA database_list") if r[1] == "main"), "")
        if keys is not None:
            self._load_keys(keys)

    # -- small state ---------------------------------------------------------------------

    def get(self, key: str, default: str | None = None) -> str | None:
        """A sync state value."""
        row = self.store.conn.execute("SELECT value FROM sync_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set(self, key: str, value: str) -> None:
        self.store.conn.execute(
            "INSERT INTO sync_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def set(self, key: str, value: str) -> None:
        """Store a sync state value durably."""
        with self.store.write():
            self._set(key, value)

    def _time(self, key: str) -> dt.datetime | None:
        raw = self.get(key)
        return dt.datetime.fromisoformat(raw) if raw else None

    # -- Outbox: push side ---------------------------------------------------------------

    def acked(self) -> int:
        """The highest sequence HQ acknowledged."""
        return int(self.get("acked", "0") or 0)

    def last_seq(self) -> int:
        """The newest sequence in the ledger (re-read: another process may append)."""
        row = self.store.conn.execute("SELECT max(seq) FROM ledger").fetchone()
        return int(row[0] or 0)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for the outbox, so it sees committed rows only and may be
        used from the push thread while the till writes (a shared connection would show
        another thread's open transaction). An in-memory database has only its one."""
        if not self._path:
            yield self.store.conn
            return
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            conn.execute("PRAGMA query_only=1")
            yield conn
        finally:
            conn.close()

    def ledger_rows(self, after: int, limit: int) -> Iterator[LedgerRow]:
        """The outbox: ledger rows with seq > after, in order, streamed from a cursor."""
        with self._reading() as conn:
            cur = conn.execute(
                "SELECT seq, id, kind, member, at, stamps, ref, body, terminal, store, hash FROM ledger "
                "WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
            try:
                for row in cur:
                    yield LedgerRow._make(row)
            finally:
                cur.close()

    def pending(self, after: int, limit: int) -> Sequence[Event]:
        """Events with seq > after, in order (as Events; the client reads `ledger_rows`)."""
        return self.store.events(after_seq=after, limit=limit)

    def members_changed(self, after: int, upto: int) -> Sequence[dict[str, Any]]:
        """PII rows to travel with events (after, upto]; never an erased member's."""
        cols = ("id", "phone", "name", "email", "birthday", "origin", "enrolled_at")
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(cols)} FROM members WHERE changed_seq > ? AND changed_seq <= ? "
                "AND id NOT IN (SELECT member FROM erasures) ORDER BY changed_seq", (after, upto)).fetchall()
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def ack(self, seq: int, *, hq_time: dt.datetime | None, local_time: dt.datetime) -> None:
        """Move the push cursor to HQ's acknowledgement; it never moves back."""
        with self.store.write():
            if seq > self.acked():
                self._set("acked", str(seq))
            self._set("last_push", _iso(local_time))

    def note_contact(self, hq_time: dt.datetime, local_time: dt.datetime) -> None:
        """HQ answered: keep the clock offset (till minus HQ, seconds)."""
        with self.store.write():
            self._set("clock_offset_s", f"{(local_time - hq_time).total_seconds():.3f}")
            self._set("last_contact", _iso(local_time))

    def clock_offset(self) -> float:
        """Seconds this till's clock runs ahead of HQ's."""
        return float(self.get("clock_offset_s", "0") or 0)

    def park(self, first: int, last: int, error: errors.Rejected, at: dt.datetime) -> None:
        """Set a rejected batch aside; pushing stops until a person retries (an alert)."""
        with self.store.write():
            self.store.conn.execute(
                "INSERT INTO parked(first_seq, last_seq, status, code, message, at, open) VALUES (?, ?, ?, ?, ?, ?, 1)",
                (first, last, error.status, error.code, error.message[:500], _iso(at)),
            )

    def parked(self) -> dict[str, Any] | None:
        """The open parked batch."""
        row = self.store.conn.execute(
            "SELECT first_seq, last_seq, status, code, message, at FROM parked WHERE open = 1 ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return dict(zip(("first_seq", "last_seq", "status", "code", "message", "at"), row, strict=True))

    def unpark(self) -> None:
        """Close parked batches so pushing resumes."""
        with self.store.write():
            self.store.conn.execute("UPDATE parked SET open = 0 WHERE open = 1")

    # -- Outbox: pull side ---------------------------------------------------------------

    def pull_cursor(self) -> int:
        """Where the next pull starts."""
        return int(self.get("pull_cursor", "0") or 0)

    def apply_page(self, page: p.PullResponse) -> None:
        """Apply one feed page and its cursor in one transaction."""
        c = self.store.conn
        erased = False
        with self.store.write():
            if page.reset:  # a full snapshot follows: forget derived remote state first
                c.execute("DELETE FROM remote_members")
                c.execute("DELETE FROM revocations")
                c.execute("DELETE FROM member_crm")
            for ch in page.changes:
                self._apply(ch)
                erased = erased or ch.kind == "erased"
            self._set("pull_cursor", str(page.next))
            if not page.more and page.tags_as_of:
                # The whole feed up to HQ's newest tag refresh is applied: a member whose entry
                # did not change in it holds tags that are as fresh as that refresh.
                self._set("tags_as_of", page.tags_as_of)
            if not page.more:
                # Everything HQ had when this pull started is now known here: redemptions
                # made after this point are "blind" until the next complete pull (rule 7).
                self._set("fresh_seq", str(page.watermark))
                self._set("last_success", _iso(self.clock()))
        if erased:
            self.store.checkpoint()  # the scrubbed rows' old pages must not survive in the WAL
        if self.keys is not None:
            self._load_keys(self.keys)

    def _apply(self, ch: p.Change) -> None:
        c = self.store.conn
        d = ch.data
        if ch.kind == "member":
            member = d["member"]
            # An erased member keeps their stamps (the ledger has no PII); only their
            # personal data is never taken in again.
            erased = c.execute("SELECT 1 FROM erasures WHERE member = ?", (member,)).fetchone()
            c.execute(
                "INSERT INTO remote_members(member, watermark, balance, tier, events, feed_seq) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(member) DO UPDATE SET watermark = excluded.watermark, balance = excluded.balance, "
                "tier = excluded.tier, events = excluded.events, feed_seq = excluded.feed_seq",
                (member, int(d["watermark"]), int(d["balance"]), d.get("tier"), canonical(d["events"]).decode(), ch.seq),
            )
            crm = d.get("crm")
            if isinstance(crm, dict) and crm.get("as_of"):
                c.execute("INSERT INTO member_crm(member, as_of, tags, hints, feed_seq) VALUES (?, ?, ?, ?, ?) "
                          "ON CONFLICT(member) DO UPDATE SET as_of = excluded.as_of, tags = excluded.tags, "
                          "hints = excluded.hints, feed_seq = excluded.feed_seq",
                          (member, str(crm["as_of"]), canonical(list(crm.get("tags") or [])).decode(),
                           canonical(dict(crm.get("hints") or {})).decode(), ch.seq))
            else:  # HQ holds no tags for this member (any more), or an HQ from before tags
                c.execute("DELETE FROM member_crm WHERE member = ?", (member,))
            if d.get("merged_into"):
                c.execute("INSERT INTO member_aliases(alias, into_id) VALUES (?, ?) "
                          "ON CONFLICT(alias) DO UPDATE SET into_id = excluded.into_id", (member, d["merged_into"]))
            pii = None if erased else d.get("pii")
            if pii and self.store.member(member) is None:
                phone = pii.get("phone")
                if phone and self.store.member_by_phone(phone) is not None:
                    phone = None  # the number moved to another member here; HQ's row wins later
                self.store.add_member(MemberRow(member, phone, pii.get("name"), pii.get("email"), pii.get("birthday"),
                                                "hq", pii.get("enrolled_at")), 0)
        elif ch.kind == "erased":
            member = d["member"]
            c.execute("INSERT INTO erasures(member, feed_seq) VALUES (?, ?) ON CONFLICT DO NOTHING", (member, ch.seq))
            # remote_members stays: it is stamps from other tills, not personal data.
            c.execute("UPDATE members SET phone = NULL, name = NULL, email = NULL, birthday = NULL WHERE id = ?",
                      (member,))
            c.execute("DELETE FROM member_crm WHERE member = ?", (member,))  # hints are personal too
        elif ch.kind == "revoked":
            c.execute("INSERT INTO revocations(member, before) VALUES (?, ?) "
                      "ON CONFLICT(member) DO UPDATE SET before = excluded.before", (d["member"], d["before"]))
        elif ch.kind == "terminal_key":
            c.execute("INSERT INTO trusted_terminals(terminal, store, public_key) VALUES (?, ?, ?) "
                      "ON CONFLICT(terminal) DO UPDATE SET public_key = excluded.public_key",
                      (d["terminal"], d.get("store"), d["public_key"]))
        elif ch.kind == "member_key":
            c.execute("INSERT INTO trusted_member_keys(kid, public_key) VALUES (?, ?) ON CONFLICT DO NOTHING",
                      (d["kid"], d["public_key"]))
        elif ch.kind == "claim_revoked":
            c.execute("INSERT INTO revoked_claims(token, feed_seq) VALUES (?, ?) ON CONFLICT DO NOTHING",
                      (d["token"], ch.seq))
        elif ch.kind == "program":
            c.execute("INSERT INTO hq_programs(version, source) VALUES (?, ?) ON CONFLICT DO NOTHING",
                      (int(d["version"]), canonical(d["source"]).decode()))
        # "store" ({"store", "name"}): a shop's name, which a till takes at enrolment; nothing to keep.

    def trust_member_keys(self, keys: dict[str, str]) -> None:
        """Trust HQ's member-card keys (at enrolment)."""
        with self.store.write():
            for kid, pub in keys.items():
                self.store.conn.execute("INSERT INTO trusted_member_keys(kid, public_key) VALUES (?, ?) "
                                        "ON CONFLICT DO NOTHING", (kid, pub))

    def _load_keys(self, keys: Keys) -> None:
        for kid, pub in self.store.conn.execute("SELECT kid, public_key FROM trusted_member_keys"):
            keys.member_keys.setdefault(kid, tokens.public_from_bytes(bytes.fromhex(pub)))
        for term, pub in self.store.conn.execute("SELECT terminal, public_key FROM trusted_terminals"):
            if term != keys.terminal_id:
                keys.terminal_keys[term] = tokens.public_from_bytes(bytes.fromhex(pub))

    # -- the local view (rule 6) ---------------------------------------------------------

    def remote(self, member: str) -> tuple[list[Event], int]:
        """HQ's snapshot of a member and this terminal's watermark W in it."""
        row = self.store.conn.execute("SELECT events, watermark FROM remote_members WHERE member = ?",
                                      (member,)).fetchone()
        if row is None:
            return [], 0
        return [Event.from_wire(w) for w in json.loads(row[0])], int(row[1])

    def tagging(self, member: str) -> Tagging | None:
        """Head office's tags and hints for a member, as of the later of the member's own entry
        and the newest complete refresh this till has pulled to the end (None: none known)."""
        row = self.store.conn.execute("SELECT as_of, tags, hints FROM member_crm WHERE member = ?",
                                      (member,)).fetchone()
        if row is None:
            return None
        as_of = dt.datetime.fromisoformat(row[0])
        confirmed = self.get("tags_as_of")
        if confirmed:
            as_of = max(as_of, dt.datetime.fromisoformat(confirmed))
        return Tagging(frozenset(json.loads(row[1])), json.loads(row[2]), as_of)

    def alias_of(self, member: str) -> str | None:
        """The member head office merged this id into, if it did."""
        row = self.store.conn.execute("SELECT into_id FROM member_aliases WHERE alias = ?", (member,)).fetchone()
        return row[0] if row else None

    def claim_revoked(self, token_id: str) -> bool:
        """True when head office says this receipt claim was revoked (its sale was voided)."""
        return self.store.conn.execute("SELECT 1 FROM revoked_claims WHERE token = ?",
                                       (token_id,)).fetchone() is not None

    def program(self) -> Program | None:
        """The newest program HQ published, if any."""
        row = self.store.conn.execute("SELECT source FROM hq_programs ORDER BY version DESC LIMIT 1").fetchone()
        return parse_program(json.loads(row[0])) if row else None

    def revoked(self, token: tokens.MemberToken) -> bool:
        """True when HQ revoked this card (issued at or before the revocation's cut-off)."""
        row = self.store.conn.execute("SELECT before FROM revocations WHERE member = ?", (token.member,)).fetchone()
        return row is not None and token.issued <= dt.datetime.fromisoformat(row[0])

    # -- offline risk (rule 7) -----------------------------------------------------------

    def exposure(self, caps: OfflineCaps) -> tuple[Exposure, dict[str, int]]:
        """Redemptions since the last fresh pull, in total and per member."""
        fresh = int(self.get("fresh_seq", "0") or 0)
        # Redemptions head office authorised online are not blind: they were checked against
        # the merged balance, with their stamps held there until they arrive.
        per: dict[str, int] = {
            m: -int(s) for m, s in self.store.conn.execute(
                "SELECT member, sum(stamps) FROM ledger WHERE kind = ? AND seq > ? "
                "AND json_extract(body, '$.grant') IS NULL GROUP BY member",
                (ev.REDEEMED, fresh))
        }
        terminals = self.store.conn.execute("SELECT count(*) FROM trusted_terminals").fetchone()[0]
        return Exposure(sum(per.values()), max(per.values(), default=0), caps, max(int(terminals), 1)), per

    def guard(self, service: Service, member: str, cost: int) -> None:
        """Refuse a redemption that would break a rule-7 cap (Refused with the cap's name)."""
        caps = service.program.offline
        now = service.now()
        offset = self.clock_offset()
        if abs(offset) > caps.max_clock_skew_s:
            raise Refused("clock_skew", f"the till's clock is {offset:+.0f}s off head office; fix it to redeem")
        last = self._time("last_success")
        if last is None or now - last > dt.timedelta(hours=caps.max_offline_hours):
            raise Refused("offline_too_long",
                          f"no sync with head office for over {caps.max_offline_hours}h; redeem when back online")
        expo, per = self.exposure(caps)
        if per.get(member, 0) + cost > caps.max_per_member:
            raise Refused("offline_cap_member",
                          f"offline limit: at most {caps.max_per_member} stamps per member until the next sync")
        if expo.blind_total + cost > caps.max_per_terminal:
            raise Refused("offline_cap_terminal",
                          f"offline limit: at most {caps.max_per_terminal} stamps at this till until the next sync")

    def pending_stamps(self, member: str, after: int) -> int:
        """The stamps this till's own events with seq > `after` move for `member`."""
        row = self.store.conn.execute("SELECT coalesce(sum(stamps), 0) FROM ledger WHERE member = ? AND seq > ?",
                                      (member, after)).fetchone()
        return int(row[0])

    def status(self, caps: OfflineCaps) -> dict[str, Any]:
        """What `tillstamp sync status` prints."""
        expo, _ = self.exposure(caps)
        acked = self.acked()
        return {
            "terminal": self.terminal,
            "hq": self.get("hq_url"),
            "acked": acked,
            "last_seq": self.last_seq(),
            "waiting": max(0, self.last_seq() - acked),
            "pull_cursor": self.pull_cursor(),
            "clock_offset_s": self.clock_offset(),
            "last_success": self.get("last_success"),
            "last_contact": self.get("last_contact"),
            "parked": self.parked(),
            "exposure": expo.to_dict(),
        }


def attach_sync(store: Store, service: Service, keys: Keys, hq_url: str) -> SyncStore | None:
    """Wire sync into an opened till (None for a till that runs alone)."""
    if not hq_url:
        return None
    sync = SyncStore(store, keys=keys, clock=service.now)
    program = sync.program()
    if program is not None and program.version >= service.program.version:
        service.program = program
    service.remote_events = lambda member: sync.remote(member)[0]
    service.remote_watermark = lambda member: sync.remote(member)[1]
    service.redeem_guard = lambda member, cost: sync.guard(service, member, cost)
    service.authorize = online_authorizer(sync, lambda: client_for(
        store, keys, sync, hq_url, transport=RequestsTransport(hq_url, timeout=AUTHORIZE_WAIT_S),
        clock=service.now))
    service.revoked = sync.revoked
    service.claim_revoked = sync.claim_revoked
    service.alias_of = sync.alias_of
    service.member_tags = sync.tagging
    service.clock_trusted = lambda: abs(sync.clock_offset()) <= service.program.offline.max_clock_skew_s
    return sync


AUTHORIZE_WAIT_S = 2.0  # how long a cashier waits for head office to authorise a redemption


def online_authorizer(sync: SyncStore, client: Callable[[], SyncClient]) -> Callable[[str, str, int], Grant | None]:
    """`Service.authorize` over a sync client (built on first use): a Grant, None when head office
    cannot be reached (the offline caps then apply), or Refused when it says no."""
    made: list[SyncClient] = []

    def authorize(member: str, reward: str, cost: int) -> Grant | None:
        if not made:
            made.append(client())
        acked = sync.acked()
        try:
            resp = made[0].authorize(member, reward, cost, after=acked, pending=sync.pending_stamps(member, acked))
        except errors.SyncError:
            return None  # offline, too slow, or a head office without online authorisation
        if not resp.ok or resp.grant is None:
            raise Refused("insufficient_balance",
                          f"reward {reward}: costs {cost} stamps, head office says {resp.available} are available")
        return Grant(resp.grant, resp.available)

    return authorize


def client_for(store: Store, keys: Keys, sync: SyncStore, hq_url: str, *, transport: Transport | None = None,
               policy: RetryPolicy | None = None, **kwargs: Any) -> SyncClient:
    """A sync client for an opened till (over HTTP to `hq_url` unless a transport is given)."""
    return SyncClient(transport or RequestsTransport(hq_url, timeout=(policy or RetryPolicy()).timeout_s),
                      sync, keys.terminal, policy=policy, **kwargs)


def start_sync_loop(store: Store, keys: Keys, sync: SyncStore | None, hq_url: str, *,
                    interval_s: float = 10.0, transport: Transport | None = None) -> SyncLoop | None:
    """Start background sync for the agent runtime (None for a till that runs alone); call `.stop()`."""
    if sync is None:
        return None
    return SyncLoop(client_for(store, keys, sync, hq_url, transport=transport), interval_s=interval_s).start()
