"""The SQL of `hq import`: imported receipts into `events` and the read model, both backends.

Two ways to write, chosen by `bulk_fits`:

- **In chunks** (a database holding more lines than the import brings): each chunk of
  receipts is one transaction with its read model, like ingest; a crash between chunks leaves
  whole receipts, and a second run completes the import.
- **In one transaction** (a database holding fewer lines than the import brings, an empty one
  first of all): the secondary indexes of `events`, `sale_lines` and `member_days` are dropped,
  every receipt and line written, the indexes built again from their definitions, members'
  figures and day rollup written (grouped from the import's own receipts for members new to
  the lines, by grouped SQL over all their lines for the others), and only then is it
  committed. A crash leaves the database as it was before the import (both backends' DDL is
  transactional), never lines without their indexes or figures. Dropping an index and
  building it again sorts once, where a million inserts into it would each walk the B-tree.
  On SQLite the connection uses a rollback journal while it runs (each new page written once,
  not to the WAL and again into the database) when no other connection has the database open;
  PostgreSQL's part (COPY, the lines' primary key, the dashboard trigger, the exclusive lock)
  is `store_import_pg`. The next chunk is made and prepared in a helper thread meanwhile.

The read model written is the one `_crm_after_ingest` writes for the same events (`hq verify`
holds it equal to a rebuild); imported sales move no stamps and make no feed entries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import numpy as np

from .import_receipts import ReceiptChunk, Visits
from .store_readmodel import LIVE, _chunks

if TYPE_CHECKING:
    from .store import SqlHqStore

_IMPORTED = ("events", "sale_lines", "member_days")  # tables whose secondary indexes a bulk import builds once
_CACHE_KIB = 262_144  # page cache while a bulk import runs: its indexes' working set stays in memory

Written = Callable[[int], None]  # file rows written so far in this call
T = TypeVar("T")


def bulk_fits(store: SqlHqStore, lines: int) -> bool:
    """Whether to import in one transaction: the database holds fewer sale lines than `lines`."""
    with store._tx(write=False) as c:
        held = store._x(c, "SELECT count(*) FROM (SELECT 1 FROM sale_lines LIMIT ?) s", (lines,)).fetchone()[0]
    return int(held) < lines


def write_chunk(store: SqlHqStore, chunk: ReceiptChunk, now: dt.datetime) -> int:
    """Store the chunk's receipts not held yet, with their read model, in one transaction;
    returns how many were new."""
    with store._tx() as c:
        new = _new(store, c, chunk)
        if not len(new):
            return 0
        _insert_events(store, c, chunk, new)
        members, lines = _lines(store, c, chunk, new)
        _read_model(store, c, chunk, new, members, lines)
    return len(new)


def write_bulk(store: SqlHqStore, chunks: Iterable[ReceiptChunk], members: Sequence[str], now: dt.datetime,
               written: Written | None = None) -> tuple[int, int]:
    """Store every receipt not held yet in one transaction, the indexes and read model built
    after the lines are in; `members` are all the import's member ids. Returns (receipts,
    new receipts)."""
    from .store_pg import PgHqStore

    if isinstance(store, PgHqStore):
        from .store_import_pg import PgBulk

        with store._tx() as c:
            return _bulk(store, c, chunks, members, written, PgBulk(store, c))
    # A rollback journal writes each new page once, where WAL writes it to the log and then
    # again into the database; it is as atomic. It cannot be set while another connection
    # has the database open in WAL mode: the import then runs in WAL.
    journal = _journal(store, "delete")
    threads = _pragma(store, "threads", "2")  # the index builds may sort on a second core
    cache = _pragma(store, "cache_size", str(-_CACHE_KIB))
    try:
        with store._tx() as c:
            return _bulk(store, c, chunks, members, written, _SqliteBulk(store, c))
    finally:
        _pragma(store, "cache_size", cache)
        _pragma(store, "threads", threads)
        _journal(store, journal)


class _Bulk(Protocol):
    """What differs between the backends in a bulk import (`store_import_pg.PgBulk` for PostgreSQL)."""

    def begin(self) -> None: ...
    def new(self, chunk: ReceiptChunk) -> np.ndarray: ...
    def prepare(self, chunk: ReceiptChunk, owner: np.ndarray, first_seq: int) -> Any: ...
    def write(self, chunk: ReceiptChunk, new: np.ndarray, owner: np.ndarray, first_seq: int,
              prepared: Any) -> None: ...
    def days(self, rows: Sequence[tuple[Any, ...]]) -> None: ...
    def build(self, tables: Sequence[str]) -> None: ...
    def end(self) -> None: ...


class _SqliteBulk:
    """SQLite's part of a bulk import: secondary indexes dropped and built again from
    `sqlite_master`, rows inserted with executemany."""

    def __init__(self, store: SqlHqStore, c: Any):
        self.store = store
        self.c = c
        self.indexes: list[tuple[str, str]] = []

    def begin(self) -> None:
        """Drop the secondary indexes of the imported tables (kept to build again)."""
        store, c = self.store, self.c
        self.indexes = store._x(c, "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                                   f"AND tbl_name IN ({', '.join('?' * len(_IMPORTED))}) ORDER BY name",
                                _IMPORTED).fetchall()
        for name, _sql in self.indexes:
            store._x(c, f'DROP INDEX "{name}"')

    def new(self, chunk: ReceiptChunk) -> np.ndarray:
        """Indexes of the chunk's receipts whose event is not held yet."""
        return _new(self.store, self.c, chunk)

    def prepare(self, chunk: ReceiptChunk, owner: np.ndarray, first_seq: int) -> Any:
        """The rows of every receipt of the chunk, numbered from `first_seq` (no database)."""
        every = np.arange(len(chunk))
        return chunk.events(every, first_seq), sorted(chunk.lines(every, owner))  # lines in primary-key order

    def write(self, chunk: ReceiptChunk, new: np.ndarray, owner: np.ndarray, first_seq: int,
              prepared: Any) -> None:
        """Insert the receipts `new` of a chunk and their lines (`prepared` when they are all of it)."""
        events, lines = prepared or (chunk.events(new, first_seq), sorted(chunk.lines(new, owner)))
        self.store._import_events(self.c, events)
        self.store._crm_insert_lines(self.c, LIVE, lines)

    def days(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rollup rows computed in memory."""
        self.store._crm_insert_days(self.c, LIVE, rows)

    def build(self, tables: Sequence[str]) -> None:
        """Build every dropped index again (all at once: the figures' SQL reads them)."""
        for _name, sql in self.indexes:
            self.store._x(self.c, sql)
        self.indexes = []

    def end(self) -> None:
        """Nothing left: the indexes are built."""


def _pragma(store: SqlHqStore, name: str, value: str) -> str:
    """Set a pragma of the SQLite connection (outside a transaction); returns its value before."""
    from .store_sqlite import SqliteHqStore

    sqlite = cast(SqliteHqStore, store)
    with sqlite._lock:
        was = sqlite.conn.execute(f"PRAGMA {name}").fetchone()[0]
        sqlite.conn.execute(f"PRAGMA {name}={value}").fetchall()
    return str(was)


def _journal(store: SqlHqStore, mode: str) -> str:
    """Set the journal mode if no other connection is in the way (without waiting for one);
    returns the mode before."""
    import sqlite3

    from .store_sqlite import SqliteHqStore

    sqlite = cast(SqliteHqStore, store)
    with sqlite._lock:
        was = str(sqlite.conn.execute("PRAGMA journal_mode").fetchone()[0])
        wait = sqlite.conn.execute("PRAGMA busy_timeout").fetchone()[0]
        sqlite.conn.execute("PRAGMA busy_timeout=0")
        try:
            sqlite.conn.execute(f"PRAGMA journal_mode={mode}").fetchall()
        except sqlite3.OperationalError:  # "database is locked": another connection has it open
            pass
        finally:
            sqlite.conn.execute(f"PRAGMA busy_timeout={int(wait)}")
    return was


def _bulk(store: SqlHqStore, c: Any, chunks: Iterable[ReceiptChunk], members: Sequence[str],
          written: Written | None, writer: _Bulk) -> tuple[int, int]:
    sales = new_sales = rows = 0
    firsts: dict[str, str] = {}  # member -> store of their first receipt stored here
    visits = Visits()
    # Before the indexes go: who was merged, and who already has lines (their figures are
    # then taken from all their lines in SQL; the others' from this import's receipts).
    alias = store._crm_aliases(c, LIVE, members)
    owners = sorted({alias.get(m, m) for m in members})
    known = store._crm_with_lines(c, LIVE, owners)
    writer.begin()

    def prepare(chunk: ReceiptChunk, first_seq: int) -> tuple[np.ndarray, Any]:  # in the helper thread
        owner = _survivors(chunk.members, alias)
        return owner, writer.prepare(chunk, owner, first_seq)

    with contextlib.closing(_ahead(chunks, prepare, _last_number(store, c) + 1)) as stream:
        for chunk, guess, (owner, prepared) in stream:
            sales += len(chunk)
            rows += chunk.rows
            new = writer.new(chunk)
            if len(new):
                new_sales += len(new)
                first = _number(store, c, len(new))
                # made for every receipt of the chunk numbered from `guess`: usable as it is
                # when they are all new and numbered so (a new head office: always)
                fits = len(new) == len(chunk) and first == guess
                writer.write(chunk, new, owner, first, prepared if fits else None)
                visits.add(chunk, new, owner)
                for m, s in zip(chunk.members[new].tolist(), chunk.stores[new].tolist(), strict=True):
                    if m is not None and m not in firsts:
                        firsts[m] = s
            if written is not None:
                written(rows)
    touched = {alias.get(m, m) for m in firsts}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hq-import") as pool:
        # the import's own figures are grouped beside the index builds (pyarrow, no database)
        grouped = pool.submit(visits.figures, touched - known)
        writer.build(("events", "sale_lines"))  # what the figures' SQL reads
        store._crm_upsert_members(c, LIVE, [(m, s, None, None, 0) for m, s in sorted(firsts.items())])
        figures, days = grouped.result()
    store._crm_write_figures(c, LIVE, figures)
    writer.days(days)
    store._crm_figures(c, LIVE, sorted(touched & known))
    store._crm_days(c, LIVE, sorted(touched & known), None)
    _tiers(store, c, sorted(firsts))
    writer.end()
    return sales, new_sales


def _ahead(chunks: Iterable[ReceiptChunk], prepare: Callable[[ReceiptChunk, int], T],
           first_seq: int) -> Generator[tuple[ReceiptChunk, int, T], None, None]:
    """Each chunk with the first number it gets if every receipt before it is new, and what
    `prepare` made of it; the next chunk is made and prepared in a helper thread while the
    caller writes this one (the database works without holding the GIL, and so does most of
    pyarrow's and numpy's work)."""
    it = iter(chunks)

    def make(first: int) -> tuple[ReceiptChunk, int, T] | None:
        chunk = next(it, None)
        return None if chunk is None else (chunk, first, prepare(chunk, first))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hq-import") as pool:
        fut = pool.submit(make, first_seq)
        while (got := fut.result()) is not None:
            fut = pool.submit(make, got[1] + len(got[0]))
            yield got


def _survivors(members: np.ndarray, alias: dict[str, str]) -> np.ndarray:
    """Members per receipt with a merged member's survivor in their place."""
    if not alias:
        return members
    return np.array([alias.get(m, m) if m is not None else None for m in members.tolist()], dtype=object)


def _new(store: SqlHqStore, c: Any, chunk: ReceiptChunk) -> np.ndarray:
    """Indexes of the chunk's receipts whose event is not held yet."""
    held: set[str] = set()
    for part in _chunks(chunk.ids.tolist()):
        cond, params = store._any("id", part)
        held |= {r[0] for r in store._x(c, f"SELECT id FROM events WHERE {cond}", params).fetchall()}
    return chunk.not_held(held)


def _last_number(store: SqlHqStore, c: Any) -> int:
    """The last sequence number taken under the import terminal."""
    row = store._x(c, "SELECT value FROM counters WHERE name = 'import'").fetchone()
    return 0 if row is None else int(row[0])


def _number(store: SqlHqStore, c: Any, n: int) -> int:
    """Take `n` sequence numbers under the import terminal; returns the first."""
    store._x(c, "INSERT INTO counters(name, value) VALUES ('import', 0) ON CONFLICT DO NOTHING")
    top = int(store._x(c, "UPDATE counters SET value = value + ? WHERE name = 'import' RETURNING value",
                       (n,)).fetchone()[0])
    return top - n + 1


def _insert_events(store: SqlHqStore, c: Any, chunk: ReceiptChunk, new: np.ndarray) -> None:
    """The new receipts' `sale.recorded` events, numbered under the import terminal."""
    store._import_events(c, chunk.events(new, _number(store, c, len(new))))


def _lines(store: SqlHqStore, c: Any, chunk: ReceiptChunk, new: np.ndarray) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """Members per receipt (a merged member's lines go to the survivor) and the new lines."""
    named = sorted({m for m in chunk.members[new].tolist() if m is not None})
    members = _survivors(chunk.members, store._crm_aliases(c, LIVE, named))
    return members, chunk.lines(new, members)


def _read_model(store: SqlHqStore, c: Any, chunk: ReceiptChunk, new: np.ndarray, members: np.ndarray,
                lines: list[tuple[Any, ...]]) -> None:
    """One chunk's read model, as `_crm_after_ingest` writes it for new sales (no refunds,
    merges, stamps or consents in an import): members first seen, lines, figures, days, tiers."""
    firsts: dict[str, str] = {}
    for m, s in zip(chunk.members[new].tolist(), chunk.stores[new].tolist(), strict=True):
        if m is not None and m not in firsts:
            firsts[m] = s
    store._crm_upsert_members(c, LIVE, [(m, s, None, None, 0) for m, s in sorted(firsts.items())])
    owners = sorted({m for m in members[new].tolist() if m is not None})
    known = store._crm_with_lines(c, LIVE, owners)
    lines.sort(key=lambda r: (r[0], r[1]))  # primary-key order: B-tree appends, not page hops
    store._crm_insert_lines(c, LIVE, lines)
    visits = Visits()
    visits.add(chunk, new, members)
    fresh, days = visits.figures(set(owners) - known)
    store._crm_write_figures(c, LIVE, fresh)
    store._crm_insert_days(c, LIVE, days)
    moved = sorted(set(owners) - set(fresh))
    store._crm_figures(c, LIVE, moved)
    store._crm_days(c, LIVE, moved, sorted({int(d) for d in chunk.day[new].tolist()}))
    _tiers(store, c, sorted(firsts))


def _tiers(store: SqlHqStore, c: Any, members: list[str]) -> None:
    """Tiers earned on spend move with sales; tiers earned on stamps do not (imports move none)."""
    prog = store._crm_program(c)
    if prog is not None and prog.tiering.qualify_on != "stamps":
        store._crm_tiers(c, LIVE, prog, members)
