"""HQ storage on PostgreSQL, for a chain with many tills.

Each request borrows a connection from a small pool. Ingest COPYs the batch into a
per-connection temporary staging table; the shared SQL of `SqlHqStore` then moves it with
INSERT ... SELECT ... ON CONFLICT DO NOTHING and derives balances and feed entries from it:
a handful of statements per batch, whatever its size. The terminal row is locked FOR UPDATE, so pushes of one terminal apply in
order while different terminals ingest in parallel.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import psycopg

from ..loyalty.events import CLAIMED, REDEEMED, REFUNDED
from ..loyalty.program import Program
from ..sync.wire import Incoming, chain
from .crm_store import PG_SCHEMA as CRM_ACCESS_SCHEMA
from .readmodel import SALE_LINE_COLS
from .store import (
    COUNTERS,
    EVENT_COLS,
    BadChain,
    Compensate,
    IngestResult,
    QuarantineError,
    SqlHqStore,
    claims_of,
    grants_of,
    slices,
)
from .store_flows import PG_SCHEMA as FLOWS_SCHEMA
from .store_predict import HISTORY_FETCH
from .store_predict import PG_SCHEMA as PREDICT_SCHEMA
from .store_readmodel import CrmPre, TierMove, crm_pre, member_upsert
from .store_tags import PG_SCHEMA as TAGS_SCHEMA
from .web.store_daily import PG_SCHEMA as DAILY_SCHEMA
from .web.store_web import PG_SCHEMA as WEB_SCHEMA

# Decodes the next chunk of a push while PostgreSQL applies the current one (psycopg waits
# for the server without the GIL). Pure Python work only: it never touches a connection.
_DECODER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hq-decode")

SCHEMA: tuple[str, ...] = (
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
    # A member's events in order, covering what the tier's window sums, the expiring leaf and
    # the tags read (kind, time, stamps): one index instead of three (docs/SYNC.md, "Fewer
    # index entries per event").
    "CREATE INDEX IF NOT EXISTS events_by_member ON events(member, gseq) INCLUDE (kind, at, stamps)",
    # Room on each page for the next version of a row: a balance update is then a HOT update
    # (no index entry), about 30% cheaper for the once-per-batch upsert of every member touched.
    "CREATE TABLE IF NOT EXISTS balances (member TEXT PRIMARY KEY, balance BIGINT NOT NULL) WITH (fillfactor = 70)",
    "ALTER TABLE balances SET (fillfactor = 70)",
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
    # Redemptions authorised online, until their event arrives (or they expire).
    """CREATE TABLE IF NOT EXISTS holds (grant_id TEXT PRIMARY KEY, member TEXT NOT NULL, terminal TEXT NOT NULL,
        cost BIGINT NOT NULL, expires TEXT NOT NULL, at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS holds_member ON holds(member)",
    # Member ids found to be one person (one phone enrolled at two tills): alias -> survivor.
    "CREATE TABLE IF NOT EXISTS merges (alias TEXT PRIMARY KEY, into_id TEXT NOT NULL, at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS members_phone ON members(phone)",
    # The CRM read model (docs/HQ.md), as on SQLite: derived from `events` in the ingest
    # transaction, rebuildable from them. Columns may be added, never renamed.
    """CREATE TABLE IF NOT EXISTS crm_members (member TEXT PRIMARY KEY, phone TEXT, name TEXT, email TEXT,
        birthday TEXT, external_id TEXT, store TEXT, enrolled_at TEXT, enrolled_day INTEGER,
        consent_whatsapp INTEGER NOT NULL DEFAULT 0, consent_email INTEGER NOT NULL DEFAULT 0,
        consent_sms INTEGER NOT NULL DEFAULT 0, balance BIGINT NOT NULL DEFAULT 0, tier TEXT,
        badges TEXT NOT NULL DEFAULT '[]', first_day INTEGER, last_day INTEGER,
        visits INTEGER NOT NULL DEFAULT 0, spend BIGINT NOT NULL DEFAULT 0, fav_category TEXT,
        fav_store TEXT, usual_hour INTEGER, usual_weekday INTEGER, merged_into TEXT,
        erased INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS crm_members_external ON crm_members(external_id)",
    "CREATE INDEX IF NOT EXISTS crm_members_phone ON crm_members(phone)",
    """CREATE TABLE IF NOT EXISTS sale_lines (sale TEXT NOT NULL, line INTEGER NOT NULL, member TEXT,
        store TEXT NOT NULL, terminal TEXT NOT NULL, receipt TEXT NOT NULL, at_utc TEXT NOT NULL,
        local_date TEXT NOT NULL, day INTEGER NOT NULL, local_hour INTEGER NOT NULL, weekday INTEGER NOT NULL,
        sku TEXT NOT NULL, name TEXT, category TEXT, qty BIGINT NOT NULL, amount BIGINT NOT NULL,
        voided INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sale, line))""",
    "CREATE INDEX IF NOT EXISTS sale_lines_member_day ON sale_lines(member, day)",
    "CREATE INDEX IF NOT EXISTS sale_lines_store_day ON sale_lines(store, day)",
    # Saved segments, their daily sizes, staff users and the audit log (hq/crm_store.py).
    *CRM_ACCESS_SCHEMA,
    # Staff passwords, sessions and one-time codes of the web pages (hq/web/store_web.py).
    *WEB_SCHEMA,
)
# As CRM_SUPPORT on SQLite: an imported member's external id, refund -> sale, rebuild tables.
SCHEMA = (
    *SCHEMA,
    "ALTER TABLE members ADD COLUMN IF NOT EXISTS external_id TEXT",
    "CREATE INDEX IF NOT EXISTS members_external ON members(external_id)",
    "CREATE INDEX IF NOT EXISTS events_sale_ref ON events(store, ref) WHERE kind = 'sale.recorded'",
    *(sql.replace("crm_members", "crm_members_rebuild").replace("sale_lines", "sale_lines_rebuild")
      for sql in SCHEMA if "crm_members" in sql or "sale_lines" in sql),
)
# The day rollup segments read (as `m010_rollups` on SQLite; docs/HQ.md, "The day rollup").
_DAYS = (
    """CREATE TABLE IF NOT EXISTS member_days (member TEXT NOT NULL, day INTEGER NOT NULL, store TEXT NOT NULL,
        visits INTEGER NOT NULL, spend BIGINT NOT NULL, PRIMARY KEY (member, day, store))""",
    "CREATE INDEX IF NOT EXISTS member_days_day ON member_days(day) INCLUDE (member, visits, spend)",
    "CREATE INDEX IF NOT EXISTS member_days_store ON member_days(store, member, day)",
)
SCHEMA = (
    *SCHEMA,
    *_DAYS,
    *(sql.replace("member_days", "member_days_rebuild") for sql in _DAYS[:1]),
    ("CREATE INDEX IF NOT EXISTS sale_lines_bought ON sale_lines(category, day, member, sale) "
     "WHERE voided = 0 AND qty > 0 AND member IS NOT NULL"),
    # Room on each page for the next version of every member row on it: ingest updates every
    # member a batch touches, and with room the update is HOT (no entry in the table's indexes).
    # At 70 % a batch that updated most rows of a page (the members of one store sit together,
    # in the order they enrolled) found room for about 60 % of them; at 50 % every update of the
    # benchmark is HOT and its member statement reads 37,500 buffers a drain instead of 64,300
    # (docs/SYNC.md). The price: the heap takes 1.4x the pages it took at 70 %.
    "ALTER TABLE crm_members SET (fillfactor = 50)",
    # each member's kept tier window sums (docs/HQ.md, "Tier"): ingest moves them forward
    *(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {col}" for table in ("crm_members", "crm_members_rebuild")
      for col in ("tier_upto TEXT", "tier_sum BIGINT", "tier_year_sum BIGINT", "tier_oldest TEXT", "tier_key TEXT")),
    # A database that held lines before the rollup existed gets it once (an empty rollup over
    # lines that all belong to guests or voided sales is refilled with nothing: cheap).
    ("INSERT INTO member_days(member, day, store, visits, spend) SELECT member, day, store, count(DISTINCT sale), "
     "sum(amount) FROM sale_lines WHERE voided = 0 AND member IS NOT NULL AND NOT EXISTS (SELECT 1 FROM member_days) "
     "GROUP BY member, day, store"),
)

# Query-side indexes of segment previews and the dashboard. Stamp events by time, for the
# `stamps_expiring_within_days` leaf (as `m013_stamps_at` on SQLite; docs/HQ.md, "Stamps
# expiring") and the dashboard's stamp totals of a period; earning events by member are read from
# `events_by_member`. Every index on `events` costs each pushed event an entry: these two once
# were five (`events_member`, `events_tier`, `events_earned`, `events_stamps_at`,
# `events_kind_at`), which made the sync drain a third slower (docs/SYNC.md). A database made
# before gets the new ones once and loses the old ones.
SCHEMA = (
    *SCHEMA,
    ("CREATE INDEX IF NOT EXISTS events_stamps_by_at ON events(at) INCLUDE (member, gseq, stamps, kind, store) "
     "WHERE stamps <> 0"),
    *(f"DROP INDEX IF EXISTS {old}" for old in ("events_member", "events_tier", "events_earned",
                                                "events_stamps_at", "events_kind_at")),
    # A preview's first 20 members come from a merge join in member order of the population and
    # a leaf's aggregate: both read index-only from these (docs/HQ.md, "The compiler").
    "CREATE INDEX IF NOT EXISTS member_days_member ON member_days(member, day) INCLUDE (visits, spend)",
    "CREATE INDEX IF NOT EXISTS crm_members_pop ON crm_members(member) INCLUDE (merged_into, erased, enrolled_day)",
)

_STAGING = (
    ("CREATE TEMP TABLE IF NOT EXISTS staging (id TEXT, terminal TEXT, store TEXT, seq BIGINT, kind TEXT, "
     "member TEXT, at TEXT, stamps BIGINT, ref TEXT, body TEXT, digest TEXT) ON COMMIT DELETE ROWS"),
    "CREATE TEMP TABLE IF NOT EXISTS touched (member TEXT PRIMARY KEY) ON COMMIT DELETE ROWS",
    # sale lines on their way into sale_lines (or sale_lines_rebuild), by COPY
    ("CREATE TEMP TABLE IF NOT EXISTS lines_staging (sale TEXT, line INTEGER, member TEXT, store TEXT, "
     "terminal TEXT, receipt TEXT, at_utc TEXT, local_date TEXT, day INTEGER, local_hour INTEGER, weekday INTEGER, "
     "sku TEXT, name TEXT, category TEXT, qty BIGINT, amount BIGINT, voided INTEGER) ON COMMIT DELETE ROWS"),
    # stamps of the events inserted by each chunk of a batch, summed into balances once at its end
    "CREATE TEMP TABLE IF NOT EXISTS pending (member TEXT NOT NULL, stamps BIGINT NOT NULL) ON COMMIT DELETE ROWS",
)


_GRANTS_OR_CLAIMS = frozenset({REDEEMED, CLAIMED, REFUNDED})  # the kinds `grants_of` and `claims_of` look at


class _Chunk(NamedTuple):
    """A decoded chunk ready for `staging`: COPY text, how many events it stages, last seq, the
    chain's digest after it, the stamps per member it carries, the members it names, and the
    events that break the event rules (not staged: quarantined) with their digests."""

    text: str
    n: int
    last: int
    tip: str
    deltas: dict[str, int]
    members: set[str | None]
    refused: list[tuple[Incoming, str]]
    grants: list[str]
    claims: list[Incoming]
    events: list[Incoming]  # the events staged (refused ones left out), for the read model
    crm: CrmPre | None  # the read model's fold of this chunk and the ones before (None: not taken)

    @classmethod
    def of(cls, events: list[Incoming], prev: str, crm: CrmPre | None = None,
           program: tuple[int, Program | None] | None = None, last: bool = False) -> _Chunk:
        texts = []
        deltas: dict[str, int] = {}
        refused: list[tuple[Incoming, str]] = []
        for lo, hi in slices(len(events)):  # in the decode thread, beside the database's
            part = events[lo:hi]
            digests = chain(prev, [e.content for e in part])
            prev = digests[-1]
            if any(e.problem is not None for e in part):
                refused += [(e, d) for e, d in zip(part, digests, strict=True) if e.problem is not None]
                kept = [i for i, e in enumerate(part) if e.problem is None]
                part, digests = [part[i] for i in kept], [digests[i] for i in kept]
            texts.append(copy_text(part, digests))
            for e in part:
                m = e.member
                if m is not None:
                    deltas[m] = deltas.get(m, 0) + e.stamps
        staged = [e for e in events if e.problem is None] if refused else events
        if program is not None and program[1] is not None:  # the program HQ last read; the hook checks it
            crm = crm_pre(crm, staged, (program[0], program[1]), last)
        # grants and claims are looked for among the few events of their kinds (one pass, not two);
        # the members named are the keys of `deltas` (every member of a staged event has one)
        few = [e for e in staged if e.kind in _GRANTS_OR_CLAIMS]
        return cls("".join(texts), len(events) - len(refused), events[-1].seq, prev, deltas,
                   set(deltas), refused, grants_of(few), claims_of(few), staged, crm)


class PgHqStore(SqlHqStore):
    """HQ storage in PostgreSQL."""

    FOR_UPDATE = " FOR UPDATE"
    BYTES = ' COLLATE "C"'

    def __init__(self, url: str, pool_size: int = 8):
        self.url = url
        self._pool: queue.LifoQueue[psycopg.Connection[Any]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool_size)
        self._all: list[psycopg.Connection[Any]] = []
        with self._tx() as c:
            c.execute("SELECT pg_advisory_xact_lock(7411)")  # two HQ processes may start at once
            for sql in (*SCHEMA, *PREDICT_SCHEMA, *FLOWS_SCHEMA, *DAILY_SCHEMA, *TAGS_SCHEMA):
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

    def ingest_chunks(self, terminal_id: str, n_chunks: int, decode_chunk: Callable[[int], list[Incoming]],
                      members: Sequence[dict[str, Any]], now: dt.datetime, compensate: Compensate, *,
                      tip: str | None = None) -> IngestResult:
        """`ingest` for a batch given as `n_chunks` chunks that `decode_chunk(k)` decodes and checks.

        One transaction, as `ingest`: chunk k+1 is decoded in a helper thread while the
        statements of chunk k run; an error found in a later chunk (malformed event, other
        terminal, chain tip) raises inside the transaction, so nothing of the batch is kept.
        Overdrafts are judged once, on the balances after the last chunk. A resend (the batch
        starts at or below acked) is decoded whole and takes the shared path."""
        head = decode_chunk(0)
        quarantined: list[int] = []
        with self._tx() as c:
            acked = self._lock_terminal(c, terminal_id, head[0].seq)
            if head[0].seq <= acked:
                events = head + [e for k in range(1, n_chunks) for e in decode_chunk(k)]
                result, quarantined = self._ingest_locked(c, terminal_id, acked, events, members, now, compensate,
                                                          tip)
            else:
                result = self._apply_chunks(c, terminal_id, head, n_chunks, decode_chunk, members, now, compensate,
                                            tip)
        if quarantined:  # committed above: the evidence is kept, then the push is refused
            raise QuarantineError(terminal_id, quarantined)
        return result

    def _apply_chunks(self, c: Any, terminal_id: str, head: list[Incoming], n_chunks: int,
                      decode_chunk: Callable[[int], list[Incoming]], members: Sequence[dict[str, Any]],
                      now: dt.datetime, compensate: Compensate, tip: str | None) -> IngestResult:
        first = head[0].seq
        row = c.execute("SELECT digest FROM positions WHERE terminal = %s AND seq = %s",
                        (terminal_id, first - 1)).fetchone()

        # The read model's fold of each chunk is taken beside the database's work too, under the
        # program last read (the hook checks it is still the current one). A fresh process reads
        # it here, so that its first batch is folded beside the database's work as well.
        if self._crm_prog is None:
            self._crm_program(c)
        program = self._crm_prog

        def decode_prep(k: int, prev: str, crm: CrmPre | None) -> _Chunk:
            return _Chunk.of(decode_chunk(k), prev, crm, program, k == n_chunks - 1)

        chunk = _Chunk.of(head, row[0] if row else "", None, program, n_chunks == 1)
        touched: set[str | None] = set()
        deltas: dict[str, int] = {}
        inserted = total = refused = 0
        claims: list[Incoming] = []
        stored: list[Incoming] = []
        for k in range(1, n_chunks + 1):
            fut: Future[_Chunk] | None = (_DECODER.submit(decode_prep, k, chunk.tip, chunk.crm) if k < n_chunks
                                          else None)
            try:
                inserted += self._apply_chunk(c, chunk, deltas)
                if chunk.refused:
                    self._refuse(c, terminal_id, chunk.refused, now)
                self._release(c, chunk.grants)
            except BaseException:
                if fut is not None:
                    fut.cancel()
                raise
            total += chunk.n
            refused += len(chunk.refused)
            claims += chunk.claims
            touched |= chunk.members
            stored += chunk.events
            done = chunk
            if fut is not None:
                chunk = fut.result()  # a bad later chunk raises here: the transaction rolls back
        if tip is not None and done.tip != tip:
            raise BadChain(f"the events do not hash to the till's ledger (seq {first}..{done.last})")
        # Balances once for the batch, from what the chunks really inserted: overdrafts are
        # judged on the balances after the whole batch, as for a batch applied at once. The
        # columns go as joined texts (`_row_source`).
        names = sorted(deltas)
        params: dict[str, Any] = {"member": names, "stamps": [deltas[m] for m in names]}
        negative = [r[0] for r in c.execute(
            f"WITH {_row_source(params, 'd', (('member', 'text'), ('stamps', 'bigint')))}, "
            "b AS (SELECT member, stamps FROM d UNION ALL SELECT member, stamps FROM pending), "
            "bal AS (INSERT INTO balances(member, balance) SELECT member, sum(stamps) FROM b "
            "GROUP BY member ORDER BY member "
            "ON CONFLICT(member) DO UPDATE SET balance = balances.balance + excluded.balance "
            "RETURNING member, balance) SELECT member FROM bal WHERE balance < 0", params).fetchall()]
        c.execute("DELETE FROM pending")
        c.execute("DELETE FROM touched")
        params = {"member": sorted(m for m in touched if m is not None)}
        c.execute(f"WITH {_row_source(params, 't', (('member', 'text'),))} "
                  "INSERT INTO touched(member) SELECT member FROM t", params)
        result = IngestResult(acked=done.last, inserted=inserted, duplicates=total - inserted, refused=refused)
        self._finish(c, terminal_id, result, sorted(negative), members, now, compensate, staged=False,
                     claims=claims)
        pre = done.crm
        if inserted < total:
            stored, pre = self._own_events(c, terminal_id, stored), None
        self._crm_after_ingest(c, stored, result.adjustments, [m["id"] for m in members], pre=pre)
        return result

    def _apply_chunk(self, c: Any, chunk: _Chunk, deltas: dict[str, int]) -> int:
        """Positions and events of one chunk; returns how many events were inserted. When all
        were (the usual case), the chunk's stamps are added to `deltas` from Python; otherwise
        (an id already held from another terminal) the inserted events' stamps go to `pending`.
        `staging` is left empty."""
        self._copy(c, chunk.text)
        cols = ", ".join(EVENT_COLS)
        n = c.execute(
            "WITH pos AS (INSERT INTO positions(terminal, seq, event_id, digest) "
            "SELECT terminal, seq, id, digest FROM staging) "
            f"INSERT INTO events({cols}) SELECT {cols} FROM staging ORDER BY seq ON CONFLICT(id) DO NOTHING"
        ).rowcount
        if n == chunk.n:
            for member, stamps in chunk.deltas.items():
                deltas[member] = deltas.get(member, 0) + stamps
        else:  # only the events stored under this terminal's own positions move balances
            c.execute("INSERT INTO pending(member, stamps) SELECT s.member, s.stamps FROM staging s "
                      "JOIN events e ON e.id = s.id AND e.terminal = s.terminal AND e.seq = s.seq "
                      "WHERE s.member IS NOT NULL")
        c.execute("DELETE FROM staging")
        return int(n)

    def _crm_after_ingest(self, c: Any, events: Sequence[Sequence[Any]], adjustments: Sequence[Any],
                          pii: Sequence[str], *, new_sales: bool = False, pre: CrmPre | None = None) -> None:
        # No JIT for the rest of this transaction: the tier query's correlated sub-selects over
        # a batch's members are estimated dear (1,000 loops) but run in milliseconds, and
        # compiling them took 0.3-0.8 s per statement (docs/SYNC.md).
        c.execute("SET LOCAL jit = off")
        super()._crm_after_ingest(c, events, adjustments, pii, new_sales=new_sales, pre=pre)

    def _crm_upsert_members(self, c: Any, t: Any, rows: Sequence[tuple[Any, ...]],
                            move: TierMove | None = None) -> set[str]:
        if move is not None:
            return self._crm_members_and_tiers(c, t, rows, move)
        # One statement for the batch's members rather than a statement each.
        if len(rows) < 20:
            return super()._crm_upsert_members(c, t, rows)
        cols = [list(col) for col in zip(*rows, strict=True)]
        c.execute(f"INSERT INTO {t.members}(member, store, enrolled_at, enrolled_day, balance) "
                  "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::bigint[]) "
                  f"{member_upsert(t)}", cols)
        return set()

    def _crm_members_and_tiers(self, c: Any, t: Any, rows: Sequence[tuple[Any, ...]], move: TierMove) -> set[str]:
        """The member upsert and the kept tier sums moved forward in one statement, one write of
        each row: new members are inserted with the batch's own sums; the others get one UPDATE
        that adds the balance and, where `tier_step_fits` holds (the same test, in SQL), the
        batch's tier step; where it does not, `tier_key` is cleared and the member returned for
        the query. Before, an upsert, a read of the kept sums and a second UPDATE wrote every
        row twice per batch. Rows are locked in no particular order here, but two pushes that
        share a member have already met on that member's `balances` row (locked in member
        order): the second waits there until the first commits."""
        steps = [move.steps.get(r[0]) for r in rows]
        params = self._crm_member_params(rows, steps, move)
        m = t.members
        # The UPDATE first, then the INSERT of only the members it did not find: nearly every
        # member of a batch has a row already, and an INSERT ... ON CONFLICT DO NOTHING of those
        # probed the key index for each and found the conflict (~40 % of the statement's time).
        # Both share the statement's snapshot: a member whose row another push committed after
        # that snapshot is in neither (the UPDATE does not see it, the INSERT waits and
        # conflicts): those go again in a statement of their own, which sees the row.
        # A member without a row has no events before this batch (every event's ingest writes its
        # member's row), so its kept sums are the batch's own: the step from nothing.
        new_tier = _tier_sql("v.now", "v.year")
        sql = (f"WITH {_row_source(params, 'v', self._V_COLS)}, u AS ({self._crm_tier_update(m)}), "
               f"ins AS (INSERT INTO {m}(member, store, "
               "enrolled_at, enrolled_day, balance, tier, tier_upto, tier_sum, tier_year_sum, tier_oldest, tier_key) "
               f"SELECT member, store, enrolled_at, day, balance, CASE WHEN upto IS NOT NULL THEN {new_tier} END, "
               "upto, now, year, oldest, CASE WHEN upto IS NOT NULL THEN %(key)s END FROM v "
               "WHERE v.member NOT IN (SELECT member FROM u) "
               f"ON CONFLICT(member) DO NOTHING RETURNING member) "
               "SELECT member, slow FROM u UNION ALL SELECT member, false FROM ins")
        done = dict(c.execute(sql, params).fetchall())
        slow = {member for member, is_slow in done.items() if is_slow}
        late = [r for r in rows if r[0] not in done]
        if late:  # rare: the same statement again, with a snapshot in which their rows are visible
            slow |= self._crm_members_and_tiers(c, t, late, move)
        return slow

    # The batch's member rows and tier steps as one row source `v` (`_row_source`).
    _V_COLS = (("member", "text"), ("store", "text"), ("enrolled_at", "text"), ("day", "int"), ("balance", "bigint"),
               ("upto", "text"), ("since", "text"), ("ystart", "text"), ("now", "bigint"), ("year", "bigint"),
               ("oldest", "text"))

    @staticmethod
    def _crm_member_params(rows: Sequence[tuple[Any, ...]], steps: Sequence[Any], move: TierMove) -> dict[str, Any]:
        """The named parameters of the row source `v` and of `_crm_tier_update`."""
        cols = [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(5)]
        params: dict[str, Any] = dict(zip(("member", "store", "enrolled_at", "day", "balance"), cols, strict=True))
        names = ("upto", "since", "ystart", "now", "year", "oldest")  # TierStep's fields, in order
        if not steps or None in steps:
            for i, name in enumerate(names):
                params[name] = [None if s is None else s[i] for s in steps]
        else:  # every member moved stamps (the usual batch): one transposition
            params.update(zip(names, map(list, zip(*steps, strict=True)), strict=True))
        params.update(key=move.key, held=move.prog.tiering.downgrade != "immediate",
                      ids=[tier.id for tier in move.prog.tiers], ths=[tier.threshold for tier in move.prog.tiers])
        return params

    @staticmethod
    def _crm_tier_update(m: str) -> str:
        """UPDATE of existing member rows from `v`: the balance added, the tier step applied where
        it fits; RETURNING each member and whether it needs the tier query."""
        fits = (f"({m}.tier_key = %(key)s AND {m}.tier_sum IS NOT NULL AND {m}.tier_year_sum IS NOT NULL "
                f"AND {m}.tier_upto COLLATE \"C\" >= v.ystart AND {m}.tier_upto COLLATE \"C\" <= v.upto "
                f"AND ({m}.tier_oldest IS NULL OR {m}.tier_oldest COLLATE \"C\" > v.since))")
        tier = _tier_sql(f"{m}.tier_sum + v.now", f"{m}.tier_year_sum + v.year")
        moved = f"v.upto IS NOT NULL AND {fits}"
        return (f"UPDATE {m} SET "
                f"store = CASE WHEN {m}.enrolled_at IS NULL AND v.enrolled_at IS NOT NULL THEN v.store "
                f"ELSE coalesce({m}.store, v.store) END, enrolled_at = coalesce({m}.enrolled_at, v.enrolled_at), "
                f"enrolled_day = coalesce({m}.enrolled_day, v.day), balance = {m}.balance + v.balance, "
                f"tier = CASE WHEN {moved} THEN {tier} ELSE {m}.tier END, "
                f"tier_upto = CASE WHEN {moved} THEN v.upto ELSE {m}.tier_upto END, "
                f"tier_sum = CASE WHEN {moved} THEN {m}.tier_sum + v.now ELSE {m}.tier_sum END, "
                f"tier_year_sum = CASE WHEN {moved} THEN {m}.tier_year_sum + v.year ELSE {m}.tier_year_sum END, "
                f"tier_oldest = CASE WHEN {moved} THEN least({m}.tier_oldest COLLATE \"C\", v.oldest) "
                f"ELSE {m}.tier_oldest END, "
                f"tier_key = CASE WHEN v.upto IS NULL OR {fits} THEN {m}.tier_key END "
                f"FROM v WHERE {m}.member = v.member RETURNING {m}.member, v.upto IS NOT NULL AND {m}.tier_key IS NULL "
                "AS slow")

    def _crm_rows(self, flat: Sequence[Any], width: int) -> tuple[str, list[Any]]:
        # Arrays, one per column: a 1,000-row VALUES list is 5,000 parameters to parse and plan.
        cols = [list(flat[i::width]) for i in range(width)]
        return "SELECT * FROM unnest(" + ", ".join(["?::text[]"] * width) + ")", cols

    def _crm_insert_lines(self, c: Any, t: Any, lines: Sequence[tuple[Any, ...]]) -> None:
        if len(lines) < 50:
            super()._crm_insert_lines(c, t, lines)
            return
        cols = ", ".join(SALE_LINE_COLS)
        with c.copy(f"COPY lines_staging ({cols}) FROM STDIN") as copy:
            for row in lines:
                copy.write_row(row)
        c.execute(f"INSERT INTO {t.lines}({cols}) SELECT {cols} FROM lines_staging ON CONFLICT(sale, line) DO NOTHING")
        c.execute("DELETE FROM lines_staging")

    def _crm_set_tiers(self, c: Any, t: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        if len(rows) < 20:
            super()._crm_set_tiers(c, t, rows)
            return
        # binary parameters: text arrays in text form are escaped element by element (a regex each)
        cols = [list(col) for col in zip(*rows, strict=True)]
        c.execute(f"UPDATE {t.members} m SET tier = v.tier, tier_upto = v.upto, tier_sum = v.now, "
                  "tier_year_sum = v.year, tier_oldest = v.oldest, tier_key = v.key FROM unnest(%b::text[], "
                  "%b::text[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[]) "
                  "v(tier, upto, now, year, oldest, key, member) WHERE m.member = v.member", cols)

    def _crm_insert_days(self, c: Any, t: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        if len(rows) < 20:
            super()._crm_insert_days(c, t, rows)
            return
        cols = [list(col) for col in zip(*rows, strict=True)]
        c.execute(f"INSERT INTO {t.days}(member, day, store, visits, spend) "
                  "SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::int[], %s::bigint[])", cols)

    def _import_events(self, c: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        cols = ", ".join(EVENT_COLS)
        with c.copy(f"COPY staging ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        c.execute(f"INSERT INTO events({cols}) SELECT {cols} FROM staging ORDER BY seq ON CONFLICT(id) DO NOTHING")
        c.execute("DELETE FROM staging")

    def _crm_lock_events(self, c: Any) -> None:
        # SHARE waits for pushes in flight and holds new ones off until the swap commits, so
        # no event can commit later with a smaller gseq than the rebuild has read.
        c.execute("LOCK TABLE events IN SHARE MODE")

    def _x(self, c: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        c.execute(sql.replace("?", "%s"), params)
        return c

    def _many(self, c: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            c.executemany(sql.replace("?", "%s"), rows)

    def _stream(self, c: Any, sql: str, params: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
        """A server-side cursor: the client holds one chunk at a time, not the whole result."""
        with c.connection.cursor(name="tillstamp_stream") as cur:
            cur.execute(sql.replace("?", "%s"), params)
            while rows := cur.fetchmany(HISTORY_FETCH):
                yield rows

    def _any(self, column: str, values: Sequence[str]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _stage(self, c: Any, events: Sequence[Incoming], digests: Sequence[str]) -> None:
        self._copy(c, copy_text(events, digests))

    @staticmethod
    def _copy(c: Any, text: str) -> None:
        """COPY rows already in COPY's text format (`copy_text`) into `staging`, in one write."""
        with c.copy(f"COPY staging ({', '.join(EVENT_COLS)}) FROM STDIN") as copy:
            copy.write(text)

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


def _tier_sql(now: str, year: str) -> str:
    """SQL for `tier_of` the window sums `now` and `year` (expressions): the program's tiers
    (sorted by threshold, the first at 0) go as `ids` and `ths`, and the last one reached is the
    tier. width_bucket counts the thresholds at or below the measure (a binary search), which is
    that tier's place; a sub-select over the thresholds cost a sub-plan per row."""
    measure = f"greatest({now}, CASE WHEN %(held)s THEN {year} ELSE 0 END, 0)"
    return f"(%(ids)b::text[])[width_bucket({measure}, %(ths)b::bigint[])]"


_SEP = "\x1f"  # the unit separator: a control character, which no checked id, store or time holds


def joined_column(values: Sequence[Any]) -> str | None:
    """`values` as one text that `string_to_array(text, E'\\x1f', '')` reads back: each value's
    text, NULL as an empty text, apart by the unit separator. None when it would not read back
    the same (a value that is an empty text or holds the separator, or a lone NULL)."""
    if "" in values or (len(values) == 1 and values[0] is None):  # a lone NULL reads back as no element
        return None
    if None in values:
        text = _SEP.join(["" if v is None else str(v) for v in values])
    else:  # no NULL (the usual column): joined in C, without a Python step per value
        try:
            text = _SEP.join(values)
        except TypeError:  # numbers
            text = _SEP.join(map(str, values))
    return text if text.count(_SEP) == max(len(values) - 1, 0) else None


def _row_source(params: dict[str, Any], name: str, cols: Sequence[tuple[str, str]]) -> str:
    """A WITH item `name` of rows from the column lists in `params` (named by `cols`, with their
    SQL types), one row per index. Each column goes as one joined text split by the server
    (`joined_column`, `params` rewritten in place): psycopg dumps a list element by element in
    Python, ~1 us each, which was ~20 ms per 10,000-event batch of the thread that talks to the
    database for the read model's member statement, the balances and `touched`. A column that
    cannot be joined makes them all go as binary arrays, as before."""
    joined = {col: joined_column(params[col]) for col, _type in cols}
    if all(v is not None for v in joined.values()):
        params.update(joined)
        params["sep"] = _SEP
        arrays = ", ".join(f"string_to_array(%({col})s, %(sep)s, '')::{typ}[]" for col, typ in cols)
    else:
        arrays = ", ".join(f"%({col})b::{typ}[]" for col, typ in cols)
    return f"{name} AS (SELECT * FROM unnest({arrays}) AS {name}({', '.join(col for col, _type in cols)}))"


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(v: object) -> str:
    return "\\N" if v is None else str(v).translate(_COPY_ESCAPES)


def copy_text(events: Sequence[Incoming], digests: Sequence[str]) -> str:
    """Rows of `staging` (EVENT_COLS; the digest from `digests`) in COPY's text format, built in
    one string so the COPY itself is a single call. A row with a backslash, tab or line break
    anywhere (rare: escapes in the event's JSON) has each field escaped; the rest go as they are."""
    null = "\\N"
    text = "".join([f"{i}\t{t}\t{s}\t{q}\t{k}\t{null if m is None else m}\t{a}\t{n}\t{null if r is None else r}\t{b}\t{d}\n"
                    for (i, t, s, q, k, m, a, n, r, b, _c, _p), d in zip(events, digests, strict=True)])
    # Checked once on the whole text rather than row by row: every row has at least its ten
    # tabs, its line break and a backslash per NULL, so equal totals mean no row has more.
    nulls = [e.member for e in events].count(None) + [e.ref for e in events].count(None)
    if (text.count("\t") == 10 * len(events) and text.count("\n") == len(events)
            and text.count("\\") == nulls and "\r" not in text):
        return text
    out = []
    for e, d in zip(events, digests, strict=True):
        member = null if e.member is None else e.member
        ref = null if e.ref is None else e.ref
        row = (f"{e.id}\t{e.terminal}\t{e.store}\t{e.seq}\t{e.kind}\t{member}\t{e.at}\t{e.stamps}\t{ref}\t"
               f"{e.body}\t{d}")
        if (row.count("\t") != 10 or row.count("\\") != (e.member is None) + (e.ref is None)
                or "\n" in row or "\r" in row):
            row = "\t".join(_copy_field(v) for v in (*e[:10], d))
        out.append(row)
    out.append("")
    return "\n".join(out)
