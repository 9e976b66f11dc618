"""The till's SQLite store: the append-only ledger (which is also the sync outbox), the
projections derived from it, and the member rows that hold PII.

All SQL of the till lives here. One `Store` owns the only write connection of a database;
every business write is one `with store.write():` block (BEGIN IMMEDIATE ... COMMIT) in
WAL mode with synchronous=FULL, so a result reported after the block is durable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database, Migrations

from ..loyalty import events as ev
from ..loyalty import rules
from ..loyalty.events import Event, canonical, content_hash, utc_text

migrations = Migrations("tillstamp.agent")


@migrations()
def m001_ledger(db: Database) -> None:
    db.execute(
        """CREATE TABLE ledger (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            member TEXT,
            at TEXT NOT NULL,
            stamps INTEGER NOT NULL,
            ref TEXT,
            body TEXT NOT NULL,
            terminal TEXT NOT NULL,
            store TEXT NOT NULL,
            hash TEXT NOT NULL
        ) STRICT"""
    )
    db.execute("CREATE INDEX ledger_member ON ledger(member, seq)")
    db.execute("CREATE INDEX ledger_ref ON ledger(ref)")
    # The ledger is append-only: corrections are new events, never edits.
    db.execute(
        "CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
        "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
        "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT")


@migrations()
def m002_members(db: Database) -> None:
    db.execute(
        """CREATE TABLE members (
            id TEXT PRIMARY KEY,
            phone TEXT UNIQUE,
            name TEXT,
            email TEXT,
            birthday TEXT,
            origin TEXT NOT NULL,
            enrolled_at TEXT,
            changed_seq INTEGER NOT NULL DEFAULT 0
        ) STRICT"""
    )


@migrations()
def m003_projections(db: Database) -> None:
    db.execute(
        """CREATE TABLE balances (
            member TEXT PRIMARY KEY,
            balance INTEGER NOT NULL DEFAULT 0,
            earned INTEGER NOT NULL DEFAULT 0,
            visits INTEGER NOT NULL DEFAULT 0,
            last_visit TEXT,
            consent TEXT NOT NULL DEFAULT '{}'
        ) STRICT"""
    )
    db.execute(
        """CREATE TABLE sales (
            key TEXT PRIMARY KEY,
            receipt TEXT NOT NULL,
            member TEXT,
            seq INTEGER NOT NULL,
            at TEXT NOT NULL,
            total INTEGER NOT NULL,
            digest TEXT NOT NULL,
            stamps INTEGER NOT NULL DEFAULT 0,
            refunded INTEGER NOT NULL DEFAULT 0,
            reversed INTEGER NOT NULL DEFAULT 0,
            refunded_lines TEXT NOT NULL DEFAULT '{}',
            claimed_by TEXT
        ) STRICT"""
    )
    db.execute("CREATE INDEX sales_receipt ON sales(receipt)")
    db.execute(
        "CREATE TABLE claims (token TEXT PRIMARY KEY, member TEXT NOT NULL, seq INTEGER NOT NULL) STRICT"
    )


@migrations()
def m004_fewer_pages_per_sale(db: Database) -> None:
    # Each page a commit touches is written to the WAL before the fsync the sale waits on.
    # A sale's event is found through sales.seq, so the ref index only cost a page; the
    # projections are looked up by their text keys, so they are stored clustered on them.
    db.execute("DROP INDEX IF EXISTS ledger_ref")
    for table, columns, key in (
        ("balances", ("member TEXT PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0, earned INTEGER NOT NULL "
                      "DEFAULT 0, visits INTEGER NOT NULL DEFAULT 0, last_visit TEXT, "
                      "consent TEXT NOT NULL DEFAULT '{}'"), "member"),
        ("sales", ("key TEXT PRIMARY KEY, receipt TEXT NOT NULL, member TEXT, seq INTEGER NOT NULL, "
                   "at TEXT NOT NULL, total INTEGER NOT NULL, digest TEXT NOT NULL, "
                   "stamps INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT 0, "
                   "reversed INTEGER NOT NULL DEFAULT 0, refunded_lines TEXT NOT NULL DEFAULT '{}', "
                   "claimed_by TEXT"), "key"),
        ("claims", "token TEXT PRIMARY KEY, member TEXT NOT NULL, seq INTEGER NOT NULL", "token"),
    ):
        db.execute(f"CREATE TABLE {table}_new ({columns}) STRICT, WITHOUT ROWID")
        db.execute(f"INSERT INTO {table}_new SELECT * FROM {table} ORDER BY {key}")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")
    db.execute("CREATE INDEX sales_receipt ON sales(receipt)")


_LEDGER_COLUMNS = """seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            kind TEXT NOT NULL,
            member TEXT,
            at TEXT NOT NULL,
            stamps INTEGER NOT NULL,
            ref TEXT,
            body TEXT NOT NULL,
            terminal TEXT NOT NULL,
            store TEXT NOT NULL,
            hash TEXT NOT NULL"""
# A sale recorded under `store/receipt` (the usual numbering) is found by its key; only a key
# with the business day in it (`store/day/receipt`) needs the receipt index.
_DAILY_KEY = "key <> substr(key, 1, instr(key, '/')) || receipt"


@migrations()
def m005_member_keyed_ids(db: Database) -> None:
    # Pages per commit (docs/AGENT.md "Pages per sale"). Event ids were unique through one
    # index over all ids, and derived ids (earned, mission, expiry) are hashes, so each landed
    # on a page of its own; a second index (member, seq) took another. Ids are now unique per
    # member in one index, where a member's events sit together (one page for a whole sale),
    # and among member-less events, whose ids are time-ordered ULIDs (appended on one page).
    # The index for receipts now holds only keys with a business day in them.
    db.execute(f"CREATE TABLE ledger_new ({_LEDGER_COLUMNS}) STRICT")
    db.execute("INSERT INTO ledger_new SELECT seq, id, kind, member, at, stamps, ref, body, terminal, store, hash "
               "FROM ledger ORDER BY seq")
    db.execute("DROP TABLE ledger")  # its triggers and indexes go with it
    db.execute("ALTER TABLE ledger_new RENAME TO ledger")
    db.execute("CREATE UNIQUE INDEX ledger_member_id ON ledger(member, id) WHERE member IS NOT NULL")
    db.execute("CREATE UNIQUE INDEX ledger_guest_id ON ledger(id) WHERE member IS NULL")
    db.execute(
        "CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
        "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
        "BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END"
    )
    db.execute("DROP INDEX sales_receipt")
    db.execute(f"CREATE INDEX sales_receipt_daily ON sales(receipt) WHERE {_DAILY_KEY}")


PROJECTION_TABLES = ("balances", "sales", "claims")
CACHE_MEMBERS = 2000
REBUILD_CHUNK = 1000  # events projected per batch by a rebuild

_INSERT_EVENT = ("INSERT INTO ledger(seq, id, kind, member, at, stamps, ref, body, terminal, store, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_SALE = "INSERT INTO sales(key, receipt, member, seq, at, total, digest, stamps) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
# Balance, lifetime earned and visits of one member, for several events at once.
_UPSERT_BALANCE = (
    "INSERT INTO balances(member, balance, earned, visits, last_visit) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(member) DO UPDATE SET balance = balance + excluded.balance, "
    "earned = earned + excluded.earned, visits = visits + excluded.visits, "
    "last_visit = CASE WHEN excluded.last_visit IS NOT NULL AND "
    "(last_visit IS NULL OR last_visit < excluded.last_visit) THEN excluded.last_visit ELSE last_visit END"
)


class StoreError(RuntimeError):
    """The database is not in a state the till can work with."""


@dataclass(frozen=True)
class MemberRow:
    """A member as the till knows them (PII may be absent for a member learned from a token)."""

    id: str
    phone: str | None
    name: str | None
    email: str | None
    birthday: str | None
    origin: str
    enrolled_at: str | None


@dataclass(frozen=True)
class SaleRow:
    """What the till remembers of a recorded sale, for duplicates, refunds and claims."""

    key: str
    receipt: str
    member: str | None
    seq: int
    at: str
    total: int
    digest: str
    stamps: int
    refunded: int
    reversed: int
    refunded_lines: dict[str, int]
    claimed_by: str | None


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with the pragmas that make an acknowledged write durable."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    if str(path) != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # Deleted or overwritten content (an erased member's name and phone) is zeroed on disk,
    # not left in free space; set here because the default depends on how SQLite was built.
    conn.execute("PRAGMA secure_delete=ON")
    # A checkpoint runs inside whichever commit crosses the threshold, and then the WAL is
    # written again from its start. Until then every commit appends to the file, and an fsync
    # that grows a file also commits the file system's journal: on ext4 about twice the wait of
    # one that overwrites (docs/AGENT.md "The sale loop"). SQLite's usual 1,000 pages (4 MiB)
    # keep that growing phase to the first ~190 sales after the WAL is made (each process
    # starts one), where 4,000 stretched it over ~750; the checkpoints, four times as many,
    # are each a quarter of the size.
    conn.execute("PRAGMA wal_autocheckpoint=1000")
    return conn


class Store:
    """The till's database. Not thread-safe for writes: the agent funnels writes to one thread."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.db = Database(conn)
        self._lock = threading.RLock()
        # Recent members' events, kept in step with our own appends; dropped whenever
        # another connection (the CLI beside a daemon) has written since we looked.
        self._cache: OrderedDict[str, list[Event]] = OrderedDict()
        self._seq = -1
        self._hash = ""
        # Member ids read from committed rows. A till never deletes a member row (an erasure
        # only blanks its PII), so an id once found stays found for the life of the process.
        self._known_members: set[str] = set()
        migrations.apply(self.db)
        self._refresh_tip()

    # -- transactions ---------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Store]:
        """One durable business write: BEGIN IMMEDIATE, then COMMIT or ROLLBACK on error."""
        with self._lock:
            if self.conn.in_transaction:  # nested: join the outer transaction
                yield self
                return
            self.conn.execute("BEGIN IMMEDIATE")
            # Another process may have appended since we last looked (the CLI next to a daemon).
            self._refresh_tip()
            try:
                yield self
                self.conn.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (a COMMIT that hit a full disk does):
                # a second ROLLBACK would fail and hide the error that matters.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                self._known_members.clear()  # a row read inside the transaction may be gone
                self._cache.clear()
                self._refresh_tip()
                raise

    @contextlib.contextmanager
    def held(self) -> Iterator[Store]:
        """The store's lock without a transaction: reads that no other thread's write comes between."""
        with self._lock:
            yield self

    @contextlib.contextmanager
    def dry_run(self) -> Iterator[Store]:
        """A write transaction that is always rolled back (to compare a rebuild with the live state)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            finally:
                self.conn.execute("ROLLBACK")
                self._known_members.clear()
                self._cache.clear()
                self._refresh_tip()

    def _refresh_tip(self) -> None:
        row = self.conn.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        seq, self._hash = (int(row[0]), str(row[1])) if row else (0, "")
        if seq != self._seq:
            self._cache.clear()
        self._seq = seq

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        self.conn.close()

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after an erasure: the WAL still
        holds the pages as they were before, PII included)."""
        with self._lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # -- meta ---------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """A setting stored in the database (store id, terminal id, sync cursor...)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting; call inside `write()` when it must move with business data."""
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- the ledger ---------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event."""
        return self._seq

    def append(self, events: Sequence[Event], *, terminal: str, store: str) -> list[Event]:
        """Append events with the next sequence numbers and update projections (in `write()`)."""
        if not self.conn.in_transaction:
            raise StoreError("append() must run inside store.write()")
        if not events:
            return []
        placed = []
        rows = []
        seq, prev = self._seq, self._hash
        for e in events:
            # Whatever head office would refuse is never committed here (rules.py): the
            # transaction is rolled back by the caller, so nothing of the request is written.
            problem = rules.event_problem(e.id, terminal, store, e.kind, e.member, e.ref, e.stamps, e.body)
            if problem is not None:
                raise rules.RuleError(f"{e.kind}: {problem}")
            seq += 1
            # Placed with its time in UTC, as it is stored: the event a later read of the ledger
            # gives (the cache must not differ from a reload: expiry dates are worked out on the
            # event's own calendar), and times in one zone compare faster in every fold.
            e = Event(e.id, e.kind, e.at.astimezone(dt.UTC), e.member, e.stamps, e.ref, e.body, seq, terminal, store)
            # Each event is encoded once: the same text is hashed and stored.
            at = e.at.isoformat()
            body = canonical(e.body)
            prev = content_hash(e, prev, body, at)
            rows.append((seq, e.id, e.kind, e.member, at, e.stamps, e.ref, body.decode(), terminal, store, prev))
            placed.append(e)
        self.conn.executemany(_INSERT_EVENT, rows)
        self._seq, self._hash = seq, prev
        self._project(placed, [r[4] for r in rows])
        for e in placed:
            if e.member is not None and e.member in self._cache:
                self._cache[e.member].append(e)
        return placed

    def has_event(self, event_id: str, member: str | None) -> bool:
        """True when the ledger already holds an event with this id (ids are unique per member)."""
        if member is None:
            row = self.conn.execute("SELECT 1 FROM ledger WHERE member IS NULL AND id = ?", (event_id,)).fetchone()
        else:
            row = self.conn.execute("SELECT 1 FROM ledger WHERE member = ? AND id = ?", (member, event_id)).fetchone()
        return row is not None

    def events(self, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """Events with seq > after_seq in order (the outbox is `events(acked)`)."""
        sql = "SELECT * FROM ledger WHERE seq > ? ORDER BY seq"
        args: list[Any] = [after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [_event(r) for r in self._rows(sql, args)]

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Every ledger row as stored, with its hash, in order (for verification)."""
        yield from self._rows("SELECT * FROM ledger ORDER BY seq", [])

    def member_events(self, member: str) -> list[Event]:
        """A member's events in ledger order (a copy: callers may extend it)."""
        with self._lock:
            if not self.conn.in_transaction:
                self._refresh_tip()
            cached = self._cache.get(member)
            if cached is None:
                cached = [_event(r) for r in self._rows("SELECT * FROM ledger WHERE member = ? ORDER BY seq", [member])]
                self._cache[member] = cached
                if len(self._cache) > CACHE_MEMBERS:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(member)
            return list(cached)

    def count_events(self) -> int:
        """How many events the ledger holds."""
        return self.conn.execute("SELECT count(*) FROM ledger").fetchone()[0]

    def _rows(self, sql: str, args: Sequence[Any]) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, args)
        cols = [c[0] for c in cur.description]
        for row in cur:
            yield dict(zip(cols, row, strict=True))

    # -- projections --------------------------------------------------------------------

    def _project(self, events: Sequence[Event], at_texts: Sequence[str] | None = None) -> None:
        """Update the projections for events in ledger order (the same code rebuilds them).

        Balance changes are summed per member and new sales gathered, then written with one
        statement each. An event whose statement must see the rows before it (consent, refund,
        reversal, claim, stamps for a sale outside this batch) first writes what is gathered,
        so the result is that of one statement per event, in order. `at_texts` are the events'
        times as stored, when the caller has them.
        """
        c = self.conn
        gathered: dict[str, list[Any]] = {}  # member -> [stamps, earned, visits, last_visit]
        new_sales: dict[str | None, list[Any]] = {}  # key -> a sales row, its stamps last

        def flush() -> None:
            if new_sales:
                c.executemany(_INSERT_SALE, list(new_sales.values()))
                new_sales.clear()
            for member, (stamps, earned, visits, last) in gathered.items():
                c.execute(_UPSERT_BALANCE, (member, stamps, earned, visits, last))
            gathered.clear()

        for i, e in enumerate(events):
            kind = e.kind
            at = at_texts[i] if at_texts is not None else utc_text(e.at)
            if e.member:
                g = gathered.get(e.member)
                if g is None:
                    g = gathered[e.member] = [0, 0, 0, None]
                g[0] += e.stamps
                if kind in ev.EARNING_KINDS:
                    g[1] += e.stamps
                if kind == ev.SALE or kind == ev.CLAIMED:  # a visit
                    g[2] += 1
                    if g[3] is None or g[3] < at:  # the same text order as the SQL's
                        g[3] = at
            if kind in (ev.ENROLLED, ev.CONSENT) and "consent" in e.body:
                flush()
                c.execute("UPDATE balances SET consent = ? WHERE member = ?",
                          (canonical(e.body["consent"]).decode(), e.member))
            elif kind == ev.SALE:
                if e.ref in new_sales:
                    flush()  # the key's second sale: its INSERT must fail as it would alone
                new_sales[e.ref] = [e.ref, e.body["receipt"], e.member, e.seq, at, e.body["total"], e.body["digest"], 0]
            elif kind == ev.EARNED:
                if e.ref in new_sales:
                    new_sales[e.ref][7] += e.stamps
                else:
                    flush()
                    c.execute("UPDATE sales SET stamps = stamps + ? WHERE key = ?", (e.stamps, e.ref))
            elif kind == ev.REFUNDED:
                flush()
                row = c.execute("SELECT refunded_lines FROM sales WHERE key = ?", (e.ref,)).fetchone()
                lines = json.loads(row[0]) if row else {}
                for sku, qty in e.body.get("lines", {}).items():
                    lines[sku] = lines.get(sku, 0) + qty
                c.execute(
                    "UPDATE sales SET refunded = refunded + ?, refunded_lines = ? WHERE key = ?",
                    (e.body["amount"], canonical(lines).decode(), e.ref),
                )
            elif kind == ev.REVERSED:
                flush()
                c.execute("UPDATE sales SET reversed = reversed - ? WHERE key = ?", (e.stamps, e.ref))
            elif kind == ev.CLAIMED:
                flush()
                c.execute("INSERT INTO claims(token, member, seq) VALUES (?, ?, ?)", (e.body["token"], e.member, e.seq))
                if e.body.get("sale"):
                    c.execute(
                        "UPDATE sales SET claimed_by = ?, stamps = stamps + ? WHERE key = ?",
                        (e.member, e.stamps, e.body["sale"]),
                    )
        flush()

    def projection_snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every projection row, sorted: two snapshots compare equal iff the projections do."""
        return {
            t: sorted(self.conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in PROJECTION_TABLES
        }

    def rebuild_projections(self) -> None:
        """Drop and recompute every projection from the ledger (in `write()`)."""
        if not self.conn.in_transaction:
            raise StoreError("rebuild_projections() must run inside store.write()")
        self._cache.clear()
        for t in PROJECTION_TABLES:
            self.conn.execute(f"DELETE FROM {t}")
        chunk: list[Event] = []
        for r in self._rows("SELECT * FROM ledger ORDER BY seq", []):
            chunk.append(_event(r))
            if len(chunk) == REBUILD_CHUNK:
                self._project(chunk)
                chunk = []
        self._project(chunk)

    def balance(self, member: str) -> int:
        """The member's balance from the projection."""
        row = self.conn.execute("SELECT balance FROM balances WHERE member = ?", (member,)).fetchone()
        return row[0] if row else 0

    def balances(self) -> dict[str, int]:
        """Every member's projected balance."""
        return dict(self.conn.execute("SELECT member, balance FROM balances").fetchall())

    def ledger_sums(self) -> dict[str, int]:
        """Every member's balance summed straight from the ledger."""
        return dict(
            self.conn.execute("SELECT member, sum(stamps) FROM ledger WHERE member IS NOT NULL GROUP BY member")
        )

    def consent(self, member: str) -> dict[str, bool]:
        """The member's consent per channel, from the projection."""
        row = self.conn.execute("SELECT consent FROM balances WHERE member = ?", (member,)).fetchone()
        return json.loads(row[0]) if row else {}

    # -- sales and claims ---------------------------------------------------------------

    def sale(self, key: str) -> SaleRow | None:
        """The recorded sale with this key, if any."""
        rows = list(self._rows("SELECT * FROM sales WHERE key = ?", [key]))
        return _sale(rows[0]) if rows else None

    def sales_by_receipt(self, receipt: str, store_id: str | None = None) -> list[SaleRow]:
        """Recorded sales with this receipt number (several business days may reuse it)."""
        # The key `store/receipt` straight from the primary key; keys with a business day
        # through the partial index (the same condition, written the same way, so it is used).
        store = store_id if store_id is not None else self.get_meta("store")
        if store is None:  # a bare store, as tests open one: no key to start from
            return [_sale(r) for r in self._rows("SELECT * FROM sales WHERE receipt = ? ORDER BY seq", [receipt])]
        return [_sale(r) for r in self._rows(
            "SELECT * FROM sales WHERE key = ? AND receipt = ? UNION ALL "
            f"SELECT * FROM sales WHERE receipt = ? AND {_DAILY_KEY} ORDER BY seq",
            [f"{store}/{receipt}", receipt, receipt])]

    def recent_sales(self, limit: int = 20) -> list[SaleRow]:
        """The newest sales first."""
        return [_sale(r) for r in self._rows("SELECT * FROM sales ORDER BY seq DESC LIMIT ?", [limit])]

    def sale_event(self, key: str) -> Event | None:
        """The sale.recorded event of a sale key."""
        rows = list(self._rows("SELECT * FROM ledger WHERE seq = (SELECT seq FROM sales WHERE key = ?)", [key]))
        return _event(rows[0]) if rows else None

    def claim_used(self, token: str) -> str | None:
        """The member who already claimed this receipt token, if any."""
        row = self.conn.execute("SELECT member FROM claims WHERE token = ?", (token,)).fetchone()
        return row[0] if row else None

    # -- members (PII) ------------------------------------------------------------------

    def add_member(self, m: MemberRow, changed_seq: int) -> None:
        """Insert a member row (in `write()`, with its enrolment event)."""
        self.conn.execute(
            "INSERT INTO members(id, phone, name, email, birthday, origin, enrolled_at, changed_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.id, m.phone, m.name, m.email, m.birthday, m.origin, m.enrolled_at, changed_seq),
        )

    def member(self, member_id: str) -> MemberRow | None:
        """The member row with this id."""
        rows = list(self._rows("SELECT * FROM members WHERE id = ?", [member_id]))
        if not rows:
            return None
        self._known_members.add(member_id)
        return _member(rows[0])

    def has_member(self, member_id: str) -> bool:
        """True when a member row with this id exists (without reading it when already seen)."""
        return member_id in self._known_members or self.member(member_id) is not None

    def member_by_phone(self, phone: str) -> MemberRow | None:
        """The member row with this E.164 phone number."""
        rows = list(self._rows("SELECT * FROM members WHERE phone = ?", [phone]))
        return _member(rows[0]) if rows else None

    def count_members(self) -> int:
        """How many members the till knows."""
        return self.conn.execute("SELECT count(*) FROM members").fetchone()[0]

    def members_changed(self, after_seq: int, upto_seq: int) -> list[MemberRow]:
        """Member rows changed by events in (after_seq, upto_seq], to travel with a push."""
        return [
            _member(r)
            for r in self._rows(
                "SELECT * FROM members WHERE changed_seq > ? AND changed_seq <= ? ORDER BY changed_seq",
                [after_seq, upto_seq],
            )
        ]


def open_store(path: str | Path) -> Store:
    """Open (creating and migrating if needed) the till database at `path` or ':memory:'."""
    return Store(connect(path))


def _event(r: dict[str, Any]) -> Event:
    return Event(
        id=r["id"],
        kind=r["kind"],
        at=dt.datetime.fromisoformat(r["at"]),
        member=r["member"],
        stamps=r["stamps"],
        ref=r["ref"],
        body=json.loads(r["body"]),
        seq=r["seq"],
        terminal=r["terminal"],
        store=r["store"],
    )


def _sale(r: dict[str, Any]) -> SaleRow:
    return SaleRow(**{**r, "refunded_lines": json.loads(r["refunded_lines"])})


def _member(r: dict[str, Any]) -> MemberRow:
    return MemberRow(**{k: r[k] for k in MemberRow.__dataclass_fields__})
