"""`hq import` into PostgreSQL in one transaction: the SQL of the bulk path `store_import` chooses
for a head office holding fewer sale lines than the import brings (docs/HQ.md, "Importing a
shop's past").

In one transaction, after `LOCK TABLE events, sale_lines, member_days IN ACCESS EXCLUSIVE MODE`:

- the secondary indexes of those tables (every index that backs no constraint) are dropped and,
  once the rows are in, created again from their definitions (`pg_indexes.indexdef`), with
  `maintenance_work_mem` raised by `SET LOCAL` so each sort stays in memory;
- the events and the lines are COPYed straight into `events` and `sale_lines`, as COPY text
  built from the receipts' columns with pyarrow (no staging table, no row-by-row Python): no
  row can conflict, since only the receipts `_new` found not held are written and a sale's
  lines exist only beside its event;
- the statement trigger that keeps the dashboard's daily totals (`dash_days_insert`) is
  disabled for the transaction, and the totals of the new lines are added in one grouped
  upsert computed from the same columns (`store_daily.add_totals`);
- the tables are ANALYZEd at the end, so that the segment queries are planned on their sizes.

PostgreSQL's DDL is transactional: an error or a crash (the client killed, the server stopped)
rolls back the rows, the dropped indexes and the disabled trigger together. The exclusive lock
is held until the commit: readers and writers of those tables (pushes, pulls, the dashboard)
wait for the whole import, which is why this path is chosen only into a small head office.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .import_receipts import IMPORT_TERMINAL
from .readmodel import SALE_LINE_COLS
from .store import EVENT_COLS
from .store_readmodel import DAY_COLS
from .web import store_daily

if TYPE_CHECKING:
    import pyarrow as pa

    from .import_receipts import ReceiptChunk
    from .store_pg import PgHqStore

IMPORTED = ("events", "sale_lines", "member_days")  # tables whose secondary indexes are built once
KEYED = ("sale_lines",)  # tables whose primary key is dropped and added again (no new line can conflict)
_MAINTENANCE_MEM = "256MB"  # sorts of the index builds: the lines' biggest index fits in it
# COPY's text format: a backslash, tab, line feed or carriage return inside a value is escaped.
_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_SPECIAL = "[\\\\\t\n\r]"  # any of them (a regular expression)


class PgBulk:
    """One bulk import's writes, inside the transaction of cursor `c`."""

    def __init__(self, store: PgHqStore, c: Any):
        self.store = store
        self.c = c
        self.indexes: dict[str, list[tuple[str, str]]] = {}
        self._totals: list[pa.Table] = []

    def begin(self) -> None:
        """Lock the tables, drop their secondary indexes (kept to build again), disable the
        dashboard's insert trigger."""
        c = self.c
        c.execute(f"LOCK TABLE {', '.join(IMPORTED)} IN ACCESS EXCLUSIVE MODE")
        c.execute(f"SET LOCAL maintenance_work_mem = '{_MAINTENANCE_MEM}'")
        rows = c.execute(
            "SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i "
            "WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s) AND NOT EXISTS ("
            "SELECT 1 FROM pg_constraint k WHERE k.conindid = "
            "(quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass) "
            "ORDER BY i.tablename, i.indexname", (list(IMPORTED),)).fetchall()
        for table, name, sql in rows:
            self.indexes.setdefault(table, []).append((name, sql))
            c.execute(f'DROP INDEX "{name}"')
        # The lines' primary key too: kept while a million random sale ids go in, it made the
        # COPY three times slower than the same COPY without it, and built once it costs a sort.
        for table, name, sql in c.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = ANY(%s::regclass[]) AND contype = 'p' ORDER BY conname", (list(KEYED),)).fetchall():
            self.indexes.setdefault(table, []).insert(0, (name, f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {sql}'))
            c.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for trigger in store_daily.PG_INSERT_TRIGGERS:
            c.execute(f'ALTER TABLE sale_lines DISABLE TRIGGER "{trigger}"')

    def new(self, chunk: ReceiptChunk) -> np.ndarray:
        """Indexes of the chunk's receipts whose event is not held yet (the ids as a binary
        parameter: a text array in text form is escaped element by element)."""
        return chunk.not_held({r[0] for r in self.c.execute("SELECT id FROM events WHERE id = ANY(%b::text[])",
                                                            (chunk.ids.tolist(),)).fetchall()})

    def prepare(self, chunk: ReceiptChunk, owner: np.ndarray, first_seq: int) -> tuple[Any, ...]:
        """The COPY texts of every receipt of the chunk, numbered from `first_seq`, and their
        daily totals (no database: it runs beside the COPY of the chunk before)."""
        return self._texts(chunk, np.arange(len(chunk)), owner, first_seq)

    @staticmethod
    def _texts(chunk: ReceiptChunk, keep: np.ndarray, owner: np.ndarray, first_seq: int) -> tuple[Any, ...]:
        import pyarrow as pa

        lines = chunk.line_columns(keep, owner)
        totals = pa.table({
            "store": pa.array(chunk.stores[keep].tolist(), pa.string()), "day": chunk.day[keep],
            "member": np.array([m is not None for m in owner[keep].tolist()], dtype=np.int64),
            "amount": chunk.totals[keep]})
        return copy_text(chunk.event_columns(keep, first_seq), len(keep)), copy_text(lines, len(lines[0])), totals

    def write(self, chunk: ReceiptChunk, new: np.ndarray, owner: np.ndarray, first_seq: int,
              prepared: tuple[Any, ...] | None) -> None:
        """COPY the receipts `new` of a chunk into `events` and their lines into `sale_lines`
        (`prepared` when they are all of it)."""
        events, lines_text, totals = prepared or self._texts(chunk, new, owner, first_seq)
        with self.c.copy(f"COPY events ({', '.join(EVENT_COLS)}) FROM STDIN") as copy:
            copy.write(events)
        with self.c.copy(f"COPY sale_lines ({', '.join(SALE_LINE_COLS)}) FROM STDIN") as copy:
            copy.write(lines_text)
        self._totals.append(totals)

    def days(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """COPY rollup rows computed in memory into `member_days` (its secondary indexes are off)."""
        with self.c.copy(f"COPY member_days ({', '.join(DAY_COLS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def build(self, tables: Sequence[str]) -> None:
        """Create the dropped indexes of `tables` again."""
        for table in tables:
            for _name, sql in self.indexes.pop(table, []):
                self.c.execute(sql)

    def end(self) -> None:
        """The rest of the indexes, the daily totals of the new lines, the trigger back, ANALYZE."""
        import pyarrow as pa

        self.build(list(self.indexes))
        if self._totals:
            # what `dash_days_insert` adds for these lines: per store and day, one visit per sale
            # (its line 0; imported sales are never voided), those with a member, and the amounts
            sums = pa.concat_tables(self._totals).group_by(["store", "day"], use_threads=False).aggregate(
                [("amount", "count"), ("member", "sum"), ("amount", "sum")])
            stores, days = sums.column("store").to_pylist(), sums.column("day").to_pylist()
            store_daily.add_totals(self.c, list(zip(
                stores, days, [IMPORT_TERMINAL] * len(stores), sums.column("amount_count").to_pylist(),
                sums.column("member_sum").to_pylist(), sums.column("amount_sum").to_pylist(), strict=True)))
        for trigger in store_daily.PG_INSERT_TRIGGERS:
            self.c.execute(f'ALTER TABLE sale_lines ENABLE TRIGGER "{trigger}"')
        self.c.execute(f"ANALYZE {', '.join(IMPORTED)}, crm_members")


def copy_text(columns: Sequence[Any], n: int) -> memoryview:
    """Rows in COPY's text format from columns (pyarrow arrays of `n` values, or one value for
    every row): each value escaped, NULL as `\\N`, joined by tabs and line feeds in pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if n == 0:
        return memoryview(b"")
    fields = [_field(col) for col in columns]
    fields[-1] = pc.binary_join_element_wise(fields[-1], "\n", "")
    rows = pc.binary_join_element_wise(*fields, "\t")
    if not isinstance(rows, pa.Array):  # every column one value: a scalar
        return memoryview((rows.as_py() * n).encode())
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
    return memoryview(rows.buffers()[2])[int(offsets[0]):int(offsets[-1])]


def _field(col: Any) -> Any:
    """One column as COPY text: an array of text, or a scalar for a value every row shares. A
    dictionary array (a receipt's values repeated on its lines) is escaped once per value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(col, pa.Array | pa.ChunkedArray):
        return pa.scalar("\\N" if col is None else _escape(str(col)))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if isinstance(col, pa.DictionaryArray):
        return pc.take(_field(col.dictionary), col.indices)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return pc.fill_null(pc.cast(col, pa.string()), "\\N")  # numbers: nothing to escape
    col = pc.cast(col, pa.string())  # large text too: the join takes one type (a chunk is small)
    if pc.any(pc.match_substring_regex(col, _SPECIAL)).as_py():
        for ch, escaped in _ESCAPES:
            col = pc.replace_substring(col, ch, escaped)
    return pc.fill_null(col, "\\N")


def _escape(text: str) -> str:
    for ch, escaped in _ESCAPES:
        text = text.replace(ch, escaped)
    return text
