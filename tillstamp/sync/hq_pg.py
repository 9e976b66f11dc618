"""HQ storage on PostgreSQL, for a chain with many tills.

Each request borrows a connection from a small pool. Ingest COPYs the batch into a
per-connection temporary staging table; the shared SQL of `SqlHqStore` then moves it with
INSERT ... SELECT ... ON CONFLICT DO NOTHING and derives balances and feed entries from it:
a handful of statements per batch, whatever its size. The terminal row is locked FOR UPDATE, so pushes of one terminal apply in
order while different terminals ingest in parallel.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from .hq_store import COUNTERS, EVENT_COLS, SqlHqStore, StagedEvent

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS terminals (id TEXT PRIMARY KEY, store TEXT NOT NULL, public_key TEXT NOT NULL,
        acked BIGINT NOT NULL DEFAULT 0, last_seen TEXT, clock_offset_s DOUBLE PRECISION, enrolled_at TEXT NOT NULL,
        quarantined INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS codes (code TEXT PRIMARY KEY, store TEXT NOT NULL, terminal TEXT,
        created_at TEXT NOT NULL, used_at TEXT)""",
    """CREATE TABLE IF NOT EXISTS nonces (terminal TEXT NOT NULL, nonce TEXT NOT NULL, at_ms BIGINT NOT NULL,
        PRIMARY KEY (terminal, nonce))""",
    """CREATE TABLE IF NOT EXISTS positions (terminal TEXT NOT NULL, seq BIGINT NOT NULL, event_id TEXT NOT NULL,
        digest TEXT NOT NULL, PRIMARY KEY (terminal, seq))""",
    """CREATE TABLE IF NOT EXISTS events (gseq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE,
        terminal TEXT NOT NULL, store TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, member TEXT,
        at TEXT NOT NULL, stamps BIGINT NOT NULL, ref TEXT, body TEXT NOT NULL, digest TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS events_member ON events(member, gseq)",
    "CREATE TABLE IF NOT EXISTS balances (member TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS members (id TEXT PRIMARY KEY, phone TEXT, name TEXT, email TEXT, birthday TEXT,
        origin TEXT NOT NULL, enrolled_at TEXT, updated_at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS erasures (member TEXT PRIMARY KEY, at TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS feed (key TEXT PRIMARY KEY, seq BIGINT NOT NULL UNIQUE, kind TEXT NOT NULL,
        payload TEXT NOT NULL, at TEXT NOT NULL)""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS programs (version BIGINT PRIMARY KEY, source TEXT NOT NULL, at TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS member_keys (kid TEXT PRIMARY KEY, public_key TEXT NOT NULL, private_pem TEXT,
        at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS alerts (id BIGSERIAL PRIMARY KEY, kind TEXT NOT NULL, terminal TEXT,
        member TEXT, detail TEXT NOT NULL, at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS quarantine (id BIGSERIAL PRIMARY KEY, terminal TEXT NOT NULL,
        seq BIGINT NOT NULL, held_digest TEXT, received TEXT NOT NULL, at TEXT NOT NULL)""",
)

_STAGING = (
    ("CREATE TEMP TABLE IF NOT EXISTS staging (id TEXT, terminal TEXT, store TEXT, seq BIGINT, kind TEXT, "
     "member TEXT, at TEXT, stamps BIGINT, ref TEXT, body TEXT, digest TEXT) ON COMMIT DELETE ROWS"),
    "CREATE TEMP TABLE IF NOT EXISTS touched (member TEXT PRIMARY KEY) ON COMMIT DELETE ROWS",
)


class PgHqStore(SqlHqStore):
    """HQ storage in PostgreSQL."""

    FOR_UPDATE = " FOR UPDATE"

    def __init__(self, url: str, pool_size: int = 8):
        self.url = url
        self._pool: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._all: list[psycopg.Connection[Any]] = []
        with self._tx() as c:
            c.execute("SELECT pg_advisory_xact_lock(7411)")  # two HQ processes may start at once
            for sql in SCHEMA:
                c.execute(sql)
            for name in COUNTERS:
                c.execute("INSERT INTO counters(name, value) VALUES (%s, 0) ON CONFLICT DO NOTHING", (name,))

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.url, autocommit=True)
        for sql in _STAGING:
            conn.execute(sql)
        self._all.append(conn)
        return conn

    def close(self) -> None:
        """Close every pooled connection."""
        for conn in self._all:
            conn.close()
        self._all.clear()

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[psycopg.Cursor[Any]]:
        with self._slots:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                conn = self._connect()
            ok = False
            try:
                with conn.transaction(), conn.cursor() as c:
                    if not write:  # one consistent snapshot for a feed page and its member events
                        c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield c
                ok = True
            finally:
                if ok or not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    self._pool.put(conn)
                else:
                    conn.close()

    def _x(self, c: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        c.execute(sql.replace("?", "%s"), params)
        return c

    def _many(self, c: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            c.executemany(sql.replace("?", "%s"), rows)

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _stage(self, c: Any, rows: Sequence[StagedEvent]) -> None:
        with c.copy(f"COPY staging ({', '.join(EVENT_COLS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)

    def _insert_events(self, c: Any) -> tuple[int, list[tuple[str, int]]]:
        # One statement: the balances add up the rows the INSERT really inserted (RETURNING),
        # instead of joining staging back to the whole events table (a scan that grows with it).
        # The first row carries the count; the others are members whose balance went negative.
        cols = ", ".join(EVENT_COLS)
        rows = c.execute(
            f"WITH ins AS (INSERT INTO events({cols}) SELECT {cols} FROM staging ORDER BY seq "
            "ON CONFLICT(id) DO NOTHING RETURNING member, stamps), "
            "bal AS (INSERT INTO balances(member, balance) SELECT member, sum(stamps) FROM ins "
            "WHERE member IS NOT NULL GROUP BY member ORDER BY member "
            "ON CONFLICT(member) DO UPDATE SET balance = balances.balance + excluded.balance "
            "RETURNING member, balance) "
            "SELECT NULL, count(*) FROM ins UNION ALL SELECT member, balance FROM bal WHERE balance < 0").fetchall()
        return int(rows[0][1]), [(r[0], int(r[1])) for r in rows[1:]]

    def _upsert_feed(self, c: Any, rows: Sequence[tuple[str, int, str, str, str]]) -> None:
        # One statement for the whole batch instead of a round trip per member.
        cols = list(zip(*rows, strict=True))
        c.execute(
            "INSERT INTO feed(key, seq, kind, payload, at) SELECT * FROM unnest(%s::text[], %s::bigint[], "
            "%s::text[], %s::text[], %s::text[]) ON CONFLICT(key) DO UPDATE SET seq = excluded.seq, "
            "kind = excluded.kind, payload = excluded.payload, at = excluded.at",
            [list(col) for col in cols],
        )
