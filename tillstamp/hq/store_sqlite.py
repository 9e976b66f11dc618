"""HQ storage on SQLite: the default for one shop or a small chain.

One connection behind a lock (SQLite has one writer anyway), WAL and synchronous=FULL so an
acknowledged push survives a crash; schema in named `sqlite_utils` migrations.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlite_utils import Database, Migrations

from ..sync.wire import Incoming
from .crm_store import SQLITE_SCHEMA as CRM_ACCESS_SCHEMA
from .store import COUNTERS, EVENT_COLS, SqlHqStore, stored_row
from .store_flows import SQLITE_SCHEMA as FLOWS_SCHEMA
from .store_predict import SQLITE_SCHEMA as PREDICT_SCHEMA
from .store_tags import SQLITE_SCHEMA as TAGS_SCHEMA
from .web.store_daily import SQLITE_SCHEMA as DAILY_SCHEMA
from .web.store_web import SQLITE_SCHEMA as WEB_SCHEMA

migrations = Migrations("tillstamp.hq")


@migrations()
def m001_hq(db: Database) -> None:
    for sql in SCHEMA:
        db.execute(sql)
    for name in COUNTERS:
        db.execute("INSERT INTO counters(name, value) VALUES (?, 0)", [name])


# Member ids found to be one person (one phone enrolled at two tills): alias -> survivor.
MERGES = """CREATE TABLE IF NOT EXISTS merges (alias TEXT PRIMARY KEY, into_id TEXT NOT NULL, at TEXT NOT NULL)"""

# Redemptions head office authorised online, until their event arrives (or they expire).
HOLDS = """CREATE TABLE IF NOT EXISTS holds (grant_id TEXT PRIMARY KEY, member TEXT NOT NULL, terminal TEXT NOT NULL,
    cost INTEGER NOT NULL, expires TEXT NOT NULL, at TEXT NOT NULL)"""


@migrations()
def m002_holds(db: Database) -> None:
    db.execute(HOLDS)
    db.execute("CREATE INDEX holds_member ON holds(member)")


@migrations()
def m003_merges(db: Database) -> None:
    db.execute(MERGES)
    db.execute("CREATE INDEX IF NOT EXISTS members_phone ON members(phone)")


@migrations()
def m004_crm_read_model(db: Database) -> None:
    for sql in CRM_SCHEMA:
        db.execute(sql)


@migrations()
def m005_crm_rebuild(db: Database) -> None:
    for sql in CRM_SUPPORT:
        db.execute(sql)


@migrations()
def m006_crm_segments_staff(db: Database) -> None:
    for sql in CRM_ACCESS_SCHEMA:
        db.execute(sql)


@migrations()
def m007_predictions(db: Database) -> None:
    for sql in PREDICT_SCHEMA:
        db.execute(sql)


@migrations()
def m008_flows(db: Database) -> None:
    for sql in FLOWS_SCHEMA:
        db.execute(sql)


@migrations()
def m009_web(db: Database) -> None:
    for sql in WEB_SCHEMA:
        db.execute(sql)


@migrations()
def m010_rollups(db: Database) -> None:
    for sql in ROLLUPS:
        db.execute(sql)


@migrations()
def m011_dash_days(db: Database) -> None:
    # the overview's per store, day and till sales, kept by triggers on sale_lines (filled once here)
    for sql in DAILY_SCHEMA:
        db.execute(sql)


@migrations()
def m012_member_tags(db: Database) -> None:
    for sql in TAGS_SCHEMA:
        db.execute(sql)



@migrations()
def m013_stamps_at(db: Database) -> None:
    # stamp events by time, and earning events by member, for the `stamps_expiring_within_days`
    # segment leaf (docs/HQ.md, "Stamps expiring")
    db.execute("CREATE INDEX IF NOT EXISTS events_stamps_at ON events(at, member, gseq, stamps) "
               "WHERE stamps <> 0 AND member IS NOT NULL")
    db.execute("CREATE INDEX IF NOT EXISTS events_earned ON events(member, gseq, at, stamps) "
               "WHERE stamps > 0 AND member IS NOT NULL")


SCHEMA = (
    """CREATE TABLE terminals (id TEXT PRIMARY KEY, store TEXT NOT NULL, public_key TEXT NOT NULL,
        acked INTEGER NOT NULL DEFAULT 0, last_seen TEXT, clock_offset_s REAL, enrolled_at TEXT NOT NULL,
        quarantined INTEGER NOT NULL DEFAULT 0) STRICT""",
    """CREATE TABLE codes (code TEXT PRIMARY KEY, store TEXT NOT NULL, terminal TEXT,
        created_at TEXT NOT NULL, used_at TEXT) STRICT""",
    """CREATE TABLE nonces (terminal TEXT NOT NULL, nonce TEXT NOT NULL, at_ms INTEGER NOT NULL,
        PRIMARY KEY (terminal, nonce)) STRICT""",
    """CREATE TABLE positions (terminal TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
        digest TEXT NOT NULL, PRIMARY KEY (terminal, seq)) STRICT""",
    """CREATE TABLE events (gseq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
        terminal TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, member TEXT,
        at TEXT NOT NULL, stamps INTEGER NOT NULL, ref TEXT, body TEXT NOT NULL, digest TEXT NOT NULL) STRICT""",
    "CREATE INDEX events_member ON events(member, gseq)",
    "CREATE TABLE balances (member TEXT PRIMARY KEY, balance INTEGER NOT NULL) STRICT",
    """CREATE TABLE members (id TEXT PRIMARY KEY, phone TEXT, name TEXT, email TEXT, birthday TEXT,
        origin TEXT NOT NULL, enrolled_at TEXT, updated_at TEXT NOT NULL) STRICT""",
    "CREATE TABLE erasures (member TEXT PRIMARY KEY, at TEXT NOT NULL) STRICT",
    """CREATE TABLE feed (key TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, kind TEXT NOT NULL,
        payload TEXT NOT NULL, at TEXT NOT NULL) STRICT""",
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT",
    "CREATE TABLE programs (version INTEGER PRIMARY KEY, source TEXT NOT NULL, at TEXT NOT NULL) STRICT",
    """CREATE TABLE member_keys (kid TEXT PRIMARY KEY, public_key TEXT NOT NULL, private_pem TEXT,
        at TEXT NOT NULL) STRICT""",
    """CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, terminal TEXT,
        member TEXT, detail TEXT NOT NULL, at TEXT NOT NULL) STRICT""",
    """CREATE TABLE quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, terminal TEXT NOT NULL,
        seq INTEGER NOT NULL, held_digest TEXT, received TEXT NOT NULL, at TEXT NOT NULL) STRICT""",
    # The ledger at HQ is append-only too: corrections are new (HQ) events.
    """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""",
)

# The CRM read model (docs/HQ.md): derived from `events` in the ingest transaction and
# rebuildable from them. Columns may be added, never renamed: segments and the CRM API read them.
CRM_SCHEMA = (
    """CREATE TABLE crm_members (member TEXT PRIMARY KEY, phone TEXT, name TEXT, email TEXT, birthday TEXT,
        external_id TEXT, store TEXT, enrolled_at TEXT, enrolled_day INTEGER,
        consent_whatsapp INTEGER NOT NULL DEFAULT 0, consent_email INTEGER NOT NULL DEFAULT 0,
        consent_sms INTEGER NOT NULL DEFAULT 0, balance INTEGER NOT NULL DEFAULT 0, tier TEXT,
        badges TEXT NOT NULL DEFAULT '[]', first_day INTEGER, last_day INTEGER,
        visits INTEGER NOT NULL DEFAULT 0, spend INTEGER NOT NULL DEFAULT 0, fav_category TEXT,
        fav_store TEXT, usual_hour INTEGER, usual_weekday INTEGER, merged_into TEXT,
        erased INTEGER NOT NULL DEFAULT 0) STRICT""",
    "CREATE INDEX crm_members_external ON crm_members(external_id)",
    "CREATE INDEX crm_members_phone ON crm_members(phone)",
    """CREATE TABLE sale_lines (sale TEXT NOT NULL, line INTEGER NOT NULL, member TEXT, store TEXT NOT NULL,
        terminal TEXT NOT NULL, receipt TEXT NOT NULL, at_utc TEXT NOT NULL, local_date TEXT NOT NULL,
        day INTEGER NOT NULL, local_hour INTEGER NOT NULL, weekday INTEGER NOT NULL, sku TEXT NOT NULL,
        name TEXT, category TEXT, qty INTEGER NOT NULL, amount INTEGER NOT NULL,
        voided INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sale, line)) STRICT""",
    "CREATE INDEX sale_lines_member_day ON sale_lines(member, day)",
    "CREATE INDEX sale_lines_store_day ON sale_lines(store, day)",
)

# What maintaining and rebuilding the read model needs besides its tables: the id a member
# had in an imported system (kept with the PII), a way from a refund to its sale, and the
# tables a rebuild fills before it swaps them in (or compares them with the live ones).
CRM_SUPPORT = (
    "ALTER TABLE members ADD COLUMN external_id TEXT",
    "CREATE INDEX members_external ON members(external_id)",
    "CREATE INDEX events_sale_ref ON events(store, ref) WHERE kind = 'sale.recorded'",
    "CREATE INDEX events_tier ON events(member, kind, at, stamps) WHERE stamps <> 0",
    *(sql.replace("crm_members", "crm_members_rebuild").replace("sale_lines", "sale_lines_rebuild")
      for sql in CRM_SCHEMA),
)

TIER_STATE = ("tier_upto TEXT", "tier_sum INTEGER", "tier_year_sum INTEGER", "tier_oldest TEXT", "tier_key TEXT")

# What segments read instead of aggregating millions of lines (docs/HQ.md, "The day rollup"):
# per member, store-local day and store, the visits (distinct non-voided sales: a sale's lines
# share one day and store, so the sum over days is the distinct count) and the spend, kept with
# the lines in the ingest transaction. Clustered by member (WITHOUT ROWID) for the all-time
# leaves; by day for the windowed ones, by store for the store leaf. `bought` by category reads
# a covering partial index of the lines it can match.
_DAYS = (
    """CREATE TABLE member_days (member TEXT NOT NULL, day INTEGER NOT NULL, store TEXT NOT NULL,
        visits INTEGER NOT NULL, spend INTEGER NOT NULL, PRIMARY KEY (member, day, store)) STRICT, WITHOUT ROWID""",
    "CREATE INDEX member_days_day ON member_days(day, member, visits, spend)",
    "CREATE INDEX member_days_store ON member_days(store, member, day)",
)
ROLLUPS = (
    *_DAYS,
    *(sql.replace("member_days", "member_days_rebuild") for sql in _DAYS[:1]),
    ("CREATE INDEX sale_lines_bought ON sale_lines(category, day, member, sale) "
     "WHERE voided = 0 AND qty > 0 AND member IS NOT NULL"),
    # each member's kept tier window sums (docs/HQ.md, "Tier"): ingest moves them forward
    *(f"ALTER TABLE {table} ADD COLUMN {col}" for table in ("crm_members", "crm_members_rebuild")
      for col in TIER_STATE),
    # a database that already holds lines gets its rollup now
    ("INSERT INTO member_days(member, day, store, visits, spend) SELECT member, day, store, count(DISTINCT sale), "
     "sum(amount) FROM sale_lines WHERE voided = 0 AND member IS NOT NULL GROUP BY member, day, store"),
)

_STAGING = (
    ("CREATE TEMP TABLE IF NOT EXISTS staging (id TEXT, terminal TEXT, store TEXT, seq INTEGER, kind TEXT, "
     "member TEXT, at TEXT, stamps INTEGER, ref TEXT, body TEXT, digest TEXT)"),
    "CREATE TEMP TABLE IF NOT EXISTS touched (member TEXT PRIMARY KEY)",
)


class SqliteHqStore(SqlHqStore):
    """HQ storage in one SQLite file (or memory)."""

    def __init__(self, path: str):
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        if path != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=30000")
        # Erased PII is zeroed on disk, whatever this SQLite build's default is.
        self.conn.execute("PRAGMA secure_delete=ON")
        # 64 MiB of page cache (the default is 2 MiB): the read model's indexes on millions of
        # sale lines otherwise go back to the file for most inserts of an import or a rebuild.
        self.conn.execute("PRAGMA cache_size=-65536")
        self._lock = threading.RLock()
        with self._lock:
            migrations.apply(Database(self.conn))
            for sql in _STAGING:
                self.conn.execute(sql)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def rebuild_crm(self, *, chunk: int = 20000, progress: Any = None, swap: bool = True) -> Any:
        """The read model's rebuild; a swap rewrites the lines (new rowids), so the overview's
        daily totals, folded by rowid on SQLite, are recomputed with it."""
        report = super().rebuild_crm(chunk=chunk, progress=progress, swap=swap)
        if swap:
            from .web.store_daily import rebuild

            rebuild(self)
        return report

    def _after_erase(self) -> None:
        # The WAL still holds the member's row as it was before the erasure: fold it into
        # the database (where secure_delete zeroed it) and truncate the WAL to nothing.
        with self._lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            c = self.conn.cursor()
            c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield c
            except BaseException:
                if self.conn.in_transaction:  # SQLite may have rolled back already (disk full)
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")

    def _stage(self, c: Any, events: Sequence[Incoming], digests: Sequence[str]) -> None:
        c.execute("DELETE FROM staging")
        c.executemany(f"INSERT INTO staging({', '.join(EVENT_COLS)}) VALUES ({', '.join('?' * len(EVENT_COLS))})",
                      map(stored_row, events, digests))
