"""Sales per store, day and till, kept from the sale lines they sum, so the dashboard's
overview reads a few hundred rows instead of every line of its window (docs/DASHBOARD.md,
"The overview's daily totals").

    dash_days(store, day, terminal, visits, member_visits, sales)

`visits` counts non-voided sales (their line 0), `member_visits` those with a member, `sales`
the net amount of their lines. Whoever writes the lines (ingest, `hq import`, a refund, a
merge, the swap of `hq rebuild`) keeps the totals right without knowing they exist:

- PostgreSQL (`PG_SCHEMA`): statement triggers over transition tables, in the writer's
  transaction: inserted lines add their grouped sums, deleted ones subtract them, an update
  does both (one grouped upsert per statement, not one per line).
- SQLite (migration `m011_dash_days`): new lines are folded in by rowid when the totals are
  read (`fold`); a change to a line already folded is applied by a row trigger at once.

Rows are per till so that two tills of one store never wait for each other's row lock on
PostgreSQL. `check` compares the totals with a sum over the lines (`hq verify`), `rebuild`
recomputes them (`hq rebuild`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_TABLE = ("CREATE TABLE dash_days (store TEXT NOT NULL, day INTEGER NOT NULL, terminal TEXT NOT NULL, "
          "visits INTEGER NOT NULL DEFAULT 0, member_visits INTEGER NOT NULL DEFAULT 0, "
          "sales {big} NOT NULL DEFAULT 0, PRIMARY KEY (store, day, terminal)){strict}")
# What a set of lines adds up to, per key; `rows` is the lines' table (or transition table).
_SUMS = ("SELECT store, day, terminal, {sign}sum(CASE WHEN line = 0 THEN 1 ELSE 0 END), "
         "{sign}sum(CASE WHEN line = 0 AND member IS NOT NULL THEN 1 ELSE 0 END), {sign}sum(amount) "
         "FROM {rows} WHERE voided = 0 GROUP BY store, day, terminal")
_UPSERT = ("INSERT INTO dash_days(store, day, terminal, visits, member_visits, sales) {values} "
           "ON CONFLICT (store, day, terminal) DO UPDATE SET visits = dash_days.visits + excluded.visits, "
           "member_visits = dash_days.member_visits + excluded.member_visits, "
           "sales = dash_days.sales + excluded.sales")
_FILL = "INSERT INTO dash_days(store, day, terminal, visits, member_visits, sales) " + _SUMS.format(
    sign="", rows="sale_lines")


def _row(p: str, sign: str) -> str:
    """One line's contribution as a VALUES-like SELECT (SQLite trigger body), `p` = NEW or OLD."""
    return (f"SELECT {p}.store, {p}.day, {p}.terminal, {sign}({p}.line = 0), "
            f"{sign}({p}.line = 0 AND {p}.member IS NOT NULL), {sign}{p}.amount WHERE {p}.voided = 0")


# Every store's days of a window, for the all-stores overview (the key leads with the store).
_DAY_INDEX = "CREATE INDEX {ine}dash_days_day ON dash_days(day)"

# SQLite: a row trigger on every inserted line made `hq import` two to three times slower (a
# trigger program per row), so there new lines are folded in when the totals are read: lines
# get increasing rowids, and `dash_marks.lines` is the last rowid folded. A line changed after
# it was folded (a refund, a void, a merge) is corrected by a row trigger at once; one not yet
# folded is left to the fold, which reads its current values. Only `hq rebuild` deletes lines,
# and it recomputes the totals (`rebuild`).
_FOLD = ("INSERT INTO dash_days(store, day, terminal, visits, member_visits, sales) "
         "SELECT store, day, terminal, sum(CASE WHEN line = 0 THEN 1 ELSE 0 END), "
         "sum(CASE WHEN line = 0 AND member IS NOT NULL THEN 1 ELSE 0 END), sum(amount) FROM sale_lines "
         "WHERE rowid > ? AND rowid <= ? AND voided = 0 GROUP BY store, day, terminal "
         "ON CONFLICT (store, day, terminal) DO UPDATE SET visits = dash_days.visits + excluded.visits, "
         "member_visits = dash_days.member_visits + excluded.member_visits, sales = dash_days.sales + excluded.sales")

SQLITE_SCHEMA: tuple[str, ...] = (
    _TABLE.format(strict=" STRICT", big="INTEGER"),
    _DAY_INDEX.format(ine=""),
    "CREATE TABLE dash_marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT",
    ("CREATE TRIGGER dash_days_update AFTER UPDATE OF store, day, terminal, line, member, amount, voided "
     "ON sale_lines WHEN OLD.rowid <= (SELECT value FROM dash_marks WHERE name = 'lines') "
     f"BEGIN {_UPSERT.format(values=_row('OLD', '-'))}; {_UPSERT.format(values=_row('NEW', ''))}; END"),
    _FILL,
    "INSERT INTO dash_marks(name, value) SELECT 'lines', coalesce(max(rowid), 0) FROM sale_lines",
)

_PG_FUNCTION = f"""CREATE OR REPLACE FUNCTION dash_days_apply() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {_UPSERT.format(values=_SUMS.format(sign="-", rows="old_lines"))};
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {_UPSERT.format(values=_SUMS.format(sign="", rows="new_lines"))};
  END IF;
  RETURN NULL;
END $fn$"""

PG_SCHEMA: tuple[str, ...] = (
    # Created and filled once, with the lines locked against writers until the triggers exist
    # (the whole schema runs in one transaction): no line is counted twice or missed.
    f"""DO $do$ BEGIN
  IF to_regclass('dash_days') IS NULL THEN
    {_TABLE.format(strict="", big="BIGINT")};
    LOCK TABLE sale_lines IN SHARE ROW EXCLUSIVE MODE;
    {_FILL};
  END IF;
END $do$""",
    _DAY_INDEX.format(ine="IF NOT EXISTS "),
    _PG_FUNCTION,
    ("CREATE OR REPLACE TRIGGER dash_days_insert AFTER INSERT ON sale_lines REFERENCING NEW TABLE AS new_lines "
     "FOR EACH STATEMENT EXECUTE FUNCTION dash_days_apply()"),
    ("CREATE OR REPLACE TRIGGER dash_days_update AFTER UPDATE ON sale_lines REFERENCING OLD TABLE AS old_lines "
     "NEW TABLE AS new_lines FOR EACH STATEMENT EXECUTE FUNCTION dash_days_apply()"),
    ("CREATE OR REPLACE TRIGGER dash_days_delete AFTER DELETE ON sale_lines REFERENCING OLD TABLE AS old_lines "
     "FOR EACH STATEMENT EXECUTE FUNCTION dash_days_apply()"),
)

# The insert trigger a bulk writer (`hq import` into PostgreSQL) may disable inside its
# transaction, adding the totals of its lines itself with `add_totals`.
PG_INSERT_TRIGGERS = ("dash_days_insert",)


def add_totals(c: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add (store, day, terminal, visits, member visits, sales) to the totals, one row per key:
    what the insert trigger adds for lines it did not see (PostgreSQL, in the writer's transaction)."""
    if not rows:
        return
    cols = [list(col) for col in zip(*rows, strict=True)]
    # binary parameters: text arrays in text form are escaped element by element
    c.execute(_UPSERT.format(values="SELECT * FROM unnest(%b::text[], %b::int[], %b::text[], %b::int[], %b::int[], "
                                    "%b::bigint[])"), cols)


def _sqlite(store: Any) -> bool:
    return type(store).__name__ != "PgHqStore"


def fold(store: Any) -> int:
    """SQLite: add the lines written since the last fold to the totals (one grouped upsert over
    the new rowids); returns how many were folded (rows recomputed if lines were deleted).
    PostgreSQL's triggers keep the totals already."""
    if not _sqlite(store):
        return 0
    with store._tx(write=False) as c:
        mark = store._x(c, "SELECT value FROM dash_marks WHERE name = 'lines'").fetchone()[0]
        top = store._x(c, "SELECT coalesce(max(rowid), 0) FROM sale_lines").fetchone()[0]
    if top < mark:  # lines were deleted outside `hq rebuild`: count them all again
        return rebuild(store)
    if top == mark:
        return 0
    with store._tx() as c:  # read again under the write lock: another fold may have run
        mark = store._x(c, "SELECT value FROM dash_marks WHERE name = 'lines'").fetchone()[0]
        top = store._x(c, "SELECT coalesce(max(rowid), 0) FROM sale_lines").fetchone()[0]
        if top > mark:
            store._x(c, _FOLD, (mark, top))
            store._x(c, "UPDATE dash_marks SET value = ? WHERE name = 'lines'", (top,))
    return int(top - mark)


def daily_sales(store: Any, first_day: int, end_day: int, scope: str | None) -> dict[int, tuple[int, int, int]]:
    """Per store-local day in [first_day, end_day): (visits, sales, member visits), a store's or all."""
    fold(store)
    where = "day >= ? AND day < ?"
    params: list[Any] = [first_day, end_day]
    if scope is not None:
        where, params = "store = ? AND " + where, [scope, *params]
    with store._tx(write=False) as c:
        rows = store._x(c, f"SELECT day, sum(visits), sum(sales), sum(member_visits) FROM dash_days WHERE {where} "
                           "GROUP BY day", params).fetchall()
    return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def check(store: Any) -> list[dict[str, Any]]:
    """Where the kept totals differ from a sum over the lines (empty when they agree)."""
    fold(store)
    with store._tx(write=False) as c:
        kept = {(r[0], int(r[1]), r[2]): tuple(int(v) for v in r[3:]) for r in store._x(
            c, "SELECT store, day, terminal, visits, member_visits, sales FROM dash_days").fetchall()}
        summed = {(r[0], int(r[1]), r[2]): tuple(int(v) for v in r[3:]) for r in store._x(
            c, _SUMS.format(sign="", rows="sale_lines")).fetchall()}
    out = []
    for key in sorted(set(kept) | set(summed)):
        a, b = kept.get(key, (0, 0, 0)), summed.get(key, (0, 0, 0))
        if a != b:
            out.append({"store": key[0], "day": key[1], "terminal": key[2], "kept": list(a), "lines": list(b)})
    return out


def rebuild(store: Any) -> int:
    """Recompute every total from the lines; returns how many rows there are."""
    with store._tx() as c:
        store._x(c, "DELETE FROM dash_days")
        store._x(c, _FILL)
        if _sqlite(store):
            store._x(c, "UPDATE dash_marks SET value = (SELECT coalesce(max(rowid), 0) FROM sale_lines) "
                        "WHERE name = 'lines'")
        return int(store._x(c, "SELECT count(*) FROM dash_days").fetchone()[0])
