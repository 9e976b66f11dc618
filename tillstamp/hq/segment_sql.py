"""Segments in SQL: one compiler from the typed tree (`hq/segments.py`) to a parameterised
condition over the read model, and the queries that count, sample and export with it.

A store module: the SQL text is fixed here and every value from a definition is bound, never
formatted in. Both backends get the same text (`?` placeholders; the PostgreSQL store rewrites
them) except a list (`IN (?, ?)` on SQLite, `= ANY(?)` on PostgreSQL) and the badge test (JSON).
Windows compare the integer `day` columns, so a window is the same query on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .segments import (
    FREQUENCY_BUCKETS,
    FREQUENCY_DAYS,
    RECENCY_BUCKETS,
    RFM_CELLS,
    All,
    AnyOf,
    AsOf,
    BalanceIn,
    BirthdayThisMonth,
    BirthdayWithin,
    Bought,
    ChurnRiskIn,
    Consented,
    EnrolledWithin,
    HasBadge,
    InStore,
    LastVisitDays,
    Node,
    Not,
    Range,
    ReorderDue,
    Rfm,
    Spend,
    StampsExpiring,
    TierIn,
    ToFullCard,
    ValueTop,
    VisitChance,
    Visits,
)

_CONSENT_COLUMN = {"whatsapp": "m.consent_whatsapp", "email": "m.consent_email", "sms": "m.consent_sms"}
SAMPLE_COLUMNS = ("member", "external_id", "name", "phone", "store", "tier", "balance")
EXPORT_COLUMNS = ("member", "external_id", "name", "phone", "email", "store", "tier", "balance",
                  "consent_whatsapp", "consent_email", "consent_sms", "visits", "spend", "last_day")


@dataclass(frozen=True)
class Compiled:
    """`FROM crm_members m {joins} WHERE {sql}`: the joins' parameters, then the condition's."""

    joins: str
    sql: str
    params: tuple[Any, ...]
    join_params: int = 0  # how many of `params` belong to the joins (they come first)
    # A join of few rows (the expiring leaf's candidates): PostgreSQL plans `ORDER BY … LIMIT`
    # over it as a nested loop that compares every member with every row, so a preview
    # materialises the matches first (`count_and_sample`).
    small_join: bool = False

    @property
    def where(self) -> str:
        """The FROM and WHERE clauses of a query over the segment's members."""
        return f"FROM crm_members m{self.joins} WHERE {self.sql}"


class _Compiler:
    """Walks the tree to SQL. A leaf over sales reads a per-member aggregate LEFT JOINed once
    (`s1`, `s2`, …: one hash join each, identical windows shared), so `not` and ranges that
    include 0 need no NOT IN, whose plan degrades badly on PostgreSQL once the set outgrows
    work_mem. Every condition is TRUE or FALSE, never NULL (nullable columns are tested IS NOT
    NULL first, missing aggregates are 0), so `not` means what it says."""

    def __init__(self, asof: AsOf, dialect: str):
        self.asof = asof
        self.dialect = dialect
        self.params: list[Any] = []
        self.joins: list[str] = []
        self.join_params: list[Any] = []
        self._aliases: dict[tuple[Any, ...], str] = {}
        self.small_join = False  # a join of few rows (see `Compiled.small_join`)

    def bind(self, *values: Any) -> None:
        self.params.extend(values)

    def inlist(self, column: str, values: Sequence[Any], into: list[Any] | None = None) -> str:
        into = self.params if into is None else into
        if self.dialect == "pg":
            into.append(list(values))
            return f"{column} = ANY(?)"
        into.extend(values)
        return f"{column} IN ({', '.join('?' * len(values))})"

    def join(self, sql: str, params: Sequence[Any]) -> str:
        """LEFT JOIN a sub-select with a unique `member` column (once per distinct sub-select)."""
        key = (sql, *map(repr, params))
        if key not in self._aliases:
            alias = f"s{len(self._aliases) + 1}"
            self._aliases[key] = alias
            self.joins.append(f" LEFT JOIN ({sql}) {alias} ON {alias}.member = m.member")
            self.join_params.extend(params)
        return self._aliases[key]

    def lines(self, select: str, within: int | None, extra: str = "", params: Sequence[Any] = (),
              select_params: Sequence[Any] = ()) -> str:
        """Join a per-member aggregate over non-voided lines before D (and in the window)."""
        sql = f"SELECT member, {select} FROM sale_lines WHERE member IS NOT NULL AND voided = 0 AND day < ?"
        bound: list[Any] = [*select_params, self.asof.day]
        if within is not None:
            sql += " AND day >= ?"
            bound.append(self.asof.day - within)
        return self.join(sql + extra + " GROUP BY member", [*bound, *params])

    def days(self, select: str, within: int | None, extra: str = "", params: Sequence[Any] = (),
             select_params: Sequence[Any] = ()) -> str:
        """Join a per-member aggregate of the day rollup before D (and in the window): the same
        answers as `lines` for visits, spend, last day and stores, from far fewer rows."""
        sql = f"SELECT member, {select} FROM member_days WHERE day < ?"
        bound: list[Any] = [*select_params, self.asof.day]
        if within is not None:
            sql += " AND day >= ?"
            bound.append(self.asof.day - within)
        return self.join(sql + extra + " GROUP BY member", [*bound, *params])

    def total(self, alias: str, r: Range) -> str:
        """A joined count or sum (missing means 0) within a range. When the range leaves 0 out
        a member without rows cannot match, and saying `v IS NOT NULL` lets the database join
        only the members with rows (an inner join, the range tested as the aggregate is
        built) instead of every member with `coalesce`: a fifth less work for a year of
        spend at 200,000 members (docs/BENCHMARKS.md). Never NULL either way, so `not` holds."""
        if r.min is not None and r.min > 0:
            return f"({alias}.v IS NOT NULL AND {self.bounds(f'{alias}.v', r)})"
        return self.bounds(f"coalesce({alias}.v, 0)", r)

    def bounds(self, expr: str, r: Range) -> str:
        conds = []
        if r.min is not None:
            conds.append(f"{expr} >= ?")
            self.bind(r.min)
        if r.max is not None:
            conds.append(f"{expr} <= ?")
            self.bind(r.max)
        return "(" + " AND ".join(conds) + ")"

    def node(self, n: Node) -> str:
        d = self.asof.day
        match n:
            case All(items):
                return "(" + " AND ".join(self.node(i) for i in items) + ")" if items else "1 = 1"
            case AnyOf(items):
                return "(" + " OR ".join(self.node(i) for i in items) + ")" if items else "1 = 0"
            case Not(item):
                return f"NOT ({self.node(item)})"
            case LastVisitDays(r):
                # With a max, lines older than D - max cannot be the last one of a match: the
                # window leaves them out, so the database groups fewer rows.
                a = self.days("max(day) AS v", r.max)
                # days = D - last day, so days in [min, max] is last day in [D - max, D - min].
                last = Range(None if r.max is None else d - r.max, None if r.min is None else d - r.min)
                return f"({a}.v IS NOT NULL AND {self.bounds(f'{a}.v', last)})"
            case Visits(r, within):
                return self.total(self.days("sum(visits) AS v", within), r)
            case Spend(r, within):
                return self.total(self.days("sum(spend) AS v", within), r)
            case Bought(sku, cat, times, within):
                extra = " AND qty > 0 AND " + ("sku = ?" if sku is not None else "category = ?")
                a = self.lines("count(DISTINCT sale) AS v", within, extra, [sku if sku is not None else cat])
                return self.total(a, Range(times, None))
            case InStore(stores):
                store_params: list[Any] = []
                where = self.inlist("store", stores, store_params)
                a = self.days("1 AS v", None, " AND " + where, store_params)
                home = "m.store IS NOT NULL AND " + self.inlist("m.store", stores)
                return f"(({home}) OR {a}.v IS NOT NULL)"
            case TierIn(tiers):
                return "(m.tier IS NOT NULL AND " + self.inlist("m.tier", tiers) + ")"
            case BalanceIn(r):
                return self.bounds("m.balance", r)
            case HasBadge(badge):
                # `badges` is a JSON list of strings. Right after '[' or ',' (and a space) a '"'
                # can only open an element (inside a string it would be escaped), so the badge's
                # JSON encoding found there is that whole element. A substring test reads no
                # JSON: the same cheap, case-sensitive test on both backends.
                enc = json.dumps(badge, ensure_ascii=False)
                self.bind("[" + enc, "," + enc, ", " + enc)
                f = "strpos(m.badges, ?) > 0" if self.dialect == "pg" else "instr(m.badges, ?) > 0"
                return f"({f} OR {f} OR {f})"
            case Consented(channel):
                return f"{_CONSENT_COLUMN[channel]} = 1"
            case BirthdayWithin(days):
                return "(m.birthday IS NOT NULL AND " + self.inlist("substr(m.birthday, 6, 5)",
                                                                    self.asof.birthdays(days)) + ")"
            case BirthdayThisMonth():
                self.bind(f"{self.asof.date.month:02d}")
                return "(m.birthday IS NOT NULL AND substr(m.birthday, 6, 2) = ?)"
            case EnrolledWithin(days):
                self.bind(d - days, d)
                return "(m.enrolled_day IS NOT NULL AND m.enrolled_day >= ? AND m.enrolled_day < ?)"
            case StampsExpiring(days):
                return self.expiring(days)
            case ToFullCard(r):
                # Stamps missing to fill the current card, with Python's (never negative) modulo.
                mod = "mod(mod(m.balance, ?) + ?, ?)" if self.dialect == "pg" else "((m.balance % ?) + ?) % ?"
                conds = []
                for op, v in ((">=", r.min), ("<=", r.max)):
                    if v is not None:
                        size = self.asof.card_size
                        self.bind(size, size, size, size, v)
                        conds.append(f"(? - {mod}) {op} ?")
                return "(" + " AND ".join(conds) + ")"
            case Rfm(cells):
                return self.rfm(cells)
            case VisitChance(share):
                a = self.predicted()
                chance = [f"{a}.p_visit_14d IS NOT NULL"]
                for op, bound in ((">=", share.min), ("<=", share.max)):
                    if bound is not None:
                        self.bind(bound)
                        chance.append(f"{a}.p_visit_14d {op} ?")
                return "(" + " AND ".join(chance) + ")"
            case ValueTop(percent):
                a = self.predicted()
                self.bind(percent / 100)
                return f"({a}.value_rank IS NOT NULL AND {a}.value_rank <= ?)"
            case ReorderDue(days):
                a = self.predicted()
                self.bind(d + days)
                return f"({a}.reorder_day IS NOT NULL AND {a}.reorder_day <= ?)"
            case ChurnRiskIn(bands):
                a = self.predicted()
                return f"({a}.churn_risk IS NOT NULL AND " + self.inlist(f"{a}.churn_risk", bands) + ")"
        raise AssertionError(n)  # pragma: no cover

    def predicted(self) -> str:
        """Join the newest complete prediction run (`hq predict`), with each member's rank by
        predicted 12-month value (cume_dist: the share of the run worth at least as much)."""
        return self.join(
            "SELECT member, p_visit_14d, reorder_day, churn_risk, cume_dist() OVER (ORDER BY value_12m DESC) "
            "AS value_rank FROM predictions WHERE run = (SELECT max(run) FROM prediction_runs WHERE complete = 1)",
            [])

    def expiring(self, days: int) -> str:
        window = self.asof.expiry_window(days)
        if window is None:
            return "1 = 0"
        cutoff = self.asof.start_utc().isoformat()
        # Open stamps are the newest earned, up to the balance before D (the oldest are spent
        # first): a lot is open while the positive stamps of the lots after it (merge order,
        # gseq) fall short of that balance. The lot of the window that comes last in that order
        # has the fewest stamps after it, so a member matches when that lot is open. Three cheap
        # reads instead of a running sum over every stamp event (docs/HQ.md, "Stamps expiring"):
        # - the candidates: each member's last earning event in the window, from the covering
        #   index of stamp events by time (`events_stamps_by_at` on PostgreSQL,
        #   `events_stamps_at` on SQLite; the window is a few days of events);
        # - the balance before D: the kept `m.balance` (the sum of all the member's stamps)
        #   less their stamps at or after D 00:00 (the same index; today's few events);
        # - the stamps earned after the candidate lot, at most `balance` events of them (every
        #   earning event holds at least one stamp, so that many already make up the balance),
        #   from the covering index of a member's events (`events_by_member`; `events_earned`
        #   on SQLite). SQLite cannot bind a LIMIT to a column of the outer row, so it sums
        #   them all.
        self.small_join = True
        a = self.join(
            "SELECT c.member AS member, c.g AS g, coalesce(t.s, 0) AS later FROM (SELECT member, max(gseq) AS g "
            "FROM events WHERE stamps <> 0 AND stamps > 0 AND member IS NOT NULL AND at >= ? AND at < ? AND at < ? "
            "GROUP BY member) c LEFT JOIN (SELECT member, sum(stamps) AS s FROM events WHERE stamps <> 0 AND "
            "member IS NOT NULL AND at >= ? GROUP BY member) t ON t.member = c.member",
            [*window, cutoff, cutoff])
        bal = f"m.balance - {a}.later"
        limit = f" ORDER BY e.gseq LIMIT greatest({bal}, 0)" if self.dialect == "pg" else ""
        self.bind(cutoff)
        return (f"({a}.g IS NOT NULL AND {bal} > coalesce((SELECT sum(n.stamps) FROM (SELECT e.stamps FROM events e "
                f"WHERE e.member = m.member AND e.gseq > {a}.g AND e.stamps > 0 AND e.member IS NOT NULL "
                f"AND e.at < ?{limit}) n), 0))")

    def rfm(self, cells: Sequence[str]) -> str:
        d = self.asof.day
        pairs = sorted({p for c in cells for p in RFM_CELLS[c]})
        rec = {s: (lo, hi) for s, lo, hi in RECENCY_BUCKETS}
        freq = {s: (lo, hi) for s, lo, hi in FREQUENCY_BUCKETS}
        # When every chosen cell has a recency of at most a year, a member's last day before D
        # matters only if it falls in the frequency year: a later last day is the same within
        # that window, an earlier one matches no cell either way (NULL here, out of range
        # there). The aggregate then reads a year of the rollup, not all of it (half the rows
        # on three years of data; docs/BENCHMARKS.md).
        year = all((hi := rec[r][1]) is not None and hi <= FREQUENCY_DAYS for r, _f in pairs)
        a = self.days("max(day) AS v, sum(CASE WHEN day >= ? THEN visits ELSE 0 END) AS f",
                      FREQUENCY_DAYS if year else None, select_params=[d - FREQUENCY_DAYS])
        ors = []
        for r, f in pairs:
            rlo, rhi = rec[r]
            flo, fhi = freq[f]
            last = Range(None if rhi is None else d - rhi, d - rlo)
            ors.append(f"({self.bounds(f'{a}.v', last)} AND {self.bounds(f'{a}.f', Range(flo, fhi))})")
        return f"({a}.v IS NOT NULL AND ({' OR '.join(ors)}))"


def compile_segment(root: Node, asof: AsOf, dialect: str) -> Compiled:
    """The definition as joins and a condition on `crm_members m` (population rules included)."""
    c = _Compiler(asof, dialect)
    c.bind(asof.day)
    base = "m.merged_into IS NULL AND m.erased = 0 AND (m.enrolled_day IS NULL OR m.enrolled_day < ?)"
    cond = c.node(root)
    return Compiled("".join(c.joins), f"{base} AND {cond}", (*c.join_params, *c.params), len(c.join_params),
                    c.small_join)


def _x(store: Any, c: Any, sql: str, params: Sequence[Any]) -> Any:
    return store._x(c, sql, params)


def dialect_of(store: Any) -> str:
    """'pg' or 'sqlite', for the few places the SQL differs."""
    return "pg" if type(store).__name__ == "PgHqStore" else "sqlite"


def count_and_sample(store: Any, compiled: Compiled, sample: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """How many members match and the first `sample` of them by member id, from one snapshot.

    A condition on member columns only is counted, then sampled by walking the primary key
    until `sample` rows match (cheap). A condition with joined aggregates runs once: the first
    member ids in order with the count riding along (with a small join on PostgreSQL the matches
    are materialised first, so the plan is the count's), then those rows are read."""
    if sample <= 0:
        return count(store, compiled), []
    cols = ", ".join(f"m.{k}" for k in SAMPLE_COLUMNS)
    with store._tx(write=False) as c:
        if not compiled.joins:
            n = int(_x(store, c, f"SELECT count(*) {compiled.where}", compiled.params).fetchone()[0])
            rows = _x(store, c, f"SELECT {cols} {compiled.where} ORDER BY m.member LIMIT ?",
                      (*compiled.params, sample)).fetchall() if n else []
            return n, [dict(zip(SAMPLE_COLUMNS, r, strict=True)) for r in rows]
        if compiled.small_join and dialect_of(store) == "pg":
            # Planned for all of its rows: under `ORDER BY … LIMIT` PostgreSQL 15 costs the
            # window count as if it could stop after 20 rows, and picked a nested loop over a
            # small joined aggregate that ran 75 times longer than the count (docs/HQ.md).
            # Other joins keep the window: there the same costing picks a merge join in member
            # order that beat the materialised plan (docs/BENCHMARKS.md).
            sql = (f"WITH t AS MATERIALIZED (SELECT m.member {compiled.where}) "
                   "SELECT member, (SELECT count(*) FROM t) FROM t ORDER BY member LIMIT ?")
        else:
            sql = f"SELECT m.member, count(*) OVER () {compiled.where} ORDER BY m.member LIMIT ?"
        ids = _x(store, c, sql, (*compiled.params, sample)).fetchall()
        if not ids:
            return 0, []
        cond, params = store._any("m.member", [r[0] for r in ids])
        rows = _x(store, c, f"SELECT {cols} FROM crm_members m WHERE {cond} ORDER BY m.member", params).fetchall()
    return int(ids[0][1]), [dict(zip(SAMPLE_COLUMNS, r, strict=True)) for r in rows]


def count(store: Any, compiled: Compiled) -> int:
    """How many members match."""
    with store._tx(write=False) as c:
        return int(_x(store, c, f"SELECT count(*) {compiled.where}", compiled.params).fetchone()[0])


def export_rows(store: Any, compiled: Compiled) -> list[tuple[Any, ...]]:
    """Every matching member as EXPORT_COLUMNS, by member id."""
    cols = ", ".join(f"m.{k}" for k in EXPORT_COLUMNS)
    with store._tx(write=False) as c:
        return [tuple(r) for r in _x(store, c, f"SELECT {cols} {compiled.where} ORDER BY m.member",
                                     compiled.params).fetchall()]
