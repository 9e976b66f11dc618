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
    Consented,
    EnrolledWithin,
    HasBadge,
    InStore,
    LastVisitDays,
    Node,
    Not,
    Range,
    Rfm,
    Spend,
    StampsExpiring,
    TierIn,
    ToFullCard,
    Visits,
)

_CONSENT_COLUMN = {"whatsapp": "m.consent_whatsapp", "email": "m.consent_email", "sms": "m.consent_sms"}
_LINES = "SELECT member FROM sale_lines WHERE member IS NOT NULL AND voided = 0 AND day < ?"
SAMPLE_COLUMNS = ("member", "external_id", "name", "phone", "store", "tier", "balance")
EXPORT_COLUMNS = ("member", "external_id", "name", "phone", "email", "store", "tier", "balance",
                  "consent_whatsapp", "consent_email", "consent_sms", "visits", "spend", "last_day")


@dataclass(frozen=True)
class Compiled:
    """A condition on `crm_members m` and its parameters, in order."""

    sql: str
    params: tuple[Any, ...]


class _Compiler:
    """Walks the tree to SQL. Every condition it emits is TRUE or FALSE, never NULL (a nullable
    column is tested IS NOT NULL first), so NOT means what it says."""

    def __init__(self, asof: AsOf, dialect: str):
        self.asof = asof
        self.dialect = dialect
        self.params: list[Any] = []

    def bind(self, *values: Any) -> None:
        self.params.extend(values)

    def inlist(self, column: str, values: Sequence[Any]) -> str:
        if self.dialect == "pg":
            self.bind(list(values))
            return f"{column} = ANY(?)"
        self.bind(*values)
        return f"{column} IN ({', '.join('?' * len(values))})"

    def lines(self, within: int | None, extra: str = "", having: str = "") -> str:
        """A sub-select of members over their non-voided lines before D (and in the window).
        The caller binds the parameters of `extra` and `having` after this call."""
        self.bind(self.asof.day)
        sql = _LINES
        if within is not None:
            sql += " AND day >= ?"
            self.bind(self.asof.day - within)
        sql += extra
        return sql + (f" GROUP BY member HAVING {having}" if having else "")

    def counted(self, r: Range, agg: str, within: int | None, extra: str = "",
                extra_params: Sequence[Any] = ()) -> str:
        """`r` holds for an aggregate that is 0 for a member without lines."""
        lo = r.min or 0
        if lo <= 0 and r.max is None:
            return "1 = 1"
        if lo <= 0:  # members without lines (0) are inside: exclude those above max instead
            sub = self.lines(within, extra, f"{agg} > ?")
            self.bind(*extra_params, r.max)
            return f"m.member NOT IN ({sub})"
        having = f"{agg} >= ?" + (" AND " + agg + " <= ?" if r.max is not None else "")
        sub = self.lines(within, extra, having)
        self.bind(*extra_params, lo, *([r.max] if r.max is not None else []))
        return f"m.member IN ({sub})"

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
                # days = D - last day, so days in [min, max] is last day in [D - max, D - min].
                conds = []
                having_params: list[Any] = []
                if r.max is not None:
                    conds.append("max(day) >= ?")
                    having_params.append(d - r.max)
                if r.min is not None:
                    conds.append("max(day) <= ?")
                    having_params.append(d - r.min)
                # With a max, lines older than D - max cannot be the last one of a match: the
                # window leaves them out, so the database groups fewer rows.
                sub = self.lines(r.max, "", " AND ".join(conds))
                self.bind(*having_params)
                return f"m.member IN ({sub})"
            case Visits(r, within):
                return self.counted(r, "count(DISTINCT sale)", within)
            case Spend(r, within):
                return self.counted(r, "sum(amount)", within)
            case Bought(sku, cat, times, within):
                extra = " AND qty > 0 AND " + ("sku = ?" if sku is not None else "category = ?")
                sub = self.lines(within, extra, "count(DISTINCT sale) >= ?")
                self.bind(sku if sku is not None else cat, times)
                return f"m.member IN ({sub})"
            case InStore(stores):
                home = "m.store IS NOT NULL AND " + self.inlist("m.store", stores)
                self.bind(d)
                sub = _LINES + " AND " + self.inlist("store", stores)
                return f"({home} OR m.member IN ({sub}))"
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
        raise AssertionError(n)  # pragma: no cover

    def bounds(self, expr: str, r: Range) -> str:
        conds = []
        if r.min is not None:
            conds.append(f"{expr} >= ?")
            self.bind(r.min)
        if r.max is not None:
            conds.append(f"{expr} <= ?")
            self.bind(r.max)
        return "(" + " AND ".join(conds) + ")"

    def expiring(self, days: int) -> str:
        window = self.asof.expiry_window(days)
        if window is None:
            return "1 = 0"
        cutoff = self.asof.start_utc().isoformat()
        # Open stamps are the newest earned, up to the balance before D: a lot is open while the
        # stamps of the lots after it (merge order) do not yet make up the balance.
        self.bind(cutoff, cutoff, *window)
        return ("m.member IN (SELECT l.member FROM (SELECT member, at, sum(stamps) OVER (PARTITION BY member "
                "ORDER BY gseq DESC ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS newer FROM events "
                "WHERE member IS NOT NULL AND stamps > 0 AND at < ?) l JOIN (SELECT member, sum(stamps) AS bal "
                "FROM events WHERE member IS NOT NULL AND at < ? GROUP BY member) b ON b.member = l.member "
                "WHERE coalesce(l.newer, 0) < b.bal AND l.at >= ? AND l.at < ?)")

    def rfm(self, cells: Sequence[str]) -> str:
        d = self.asof.day
        pairs = sorted({p for c in cells for p in RFM_CELLS[c]})
        rec = {s: (lo, hi) for s, lo, hi in RECENCY_BUCKETS}
        freq = {s: (lo, hi) for s, lo, hi in FREQUENCY_BUCKETS}
        sub = self.lines(None)
        sub += " GROUP BY member HAVING "
        ors = []
        for r, f in pairs:
            rlo, rhi = rec[r]
            flo, fhi = freq[f]
            conds = ["max(day) <= ?"]
            self.bind(d - rlo)
            if rhi is not None:
                conds.append("max(day) >= ?")
                self.bind(d - rhi)
            conds.append("count(DISTINCT CASE WHEN day >= ? THEN sale END) >= ?")
            self.bind(d - FREQUENCY_DAYS, flo)
            if fhi is not None:
                conds.append("count(DISTINCT CASE WHEN day >= ? THEN sale END) <= ?")
                self.bind(d - FREQUENCY_DAYS, fhi)
            ors.append("(" + " AND ".join(conds) + ")")
        return f"m.member IN ({sub}{' OR '.join(ors)})"


def compile_segment(root: Node, asof: AsOf, dialect: str) -> Compiled:
    """The definition as a condition on `crm_members m` (population rules included)."""
    c = _Compiler(asof, dialect)
    c.bind(asof.day)
    base = "m.merged_into IS NULL AND m.erased = 0 AND (m.enrolled_day IS NULL OR m.enrolled_day < ?)"
    cond = c.node(root)
    return Compiled(f"{base} AND {cond}", tuple(c.params))


def _x(store: Any, c: Any, sql: str, params: Sequence[Any]) -> Any:
    return store._x(c, sql, params)


def dialect_of(store: Any) -> str:
    """'pg' or 'sqlite', for the few places the SQL differs."""
    return "pg" if type(store).__name__ == "PgHqStore" else "sqlite"


def count_and_sample(store: Any, compiled: Compiled, sample: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """How many members match, and the first `sample` of them by member id, in one statement
    (the count rides along as a window), so a preview costs one pass over the read model."""
    if sample <= 0:
        return count(store, compiled), []
    cols = ", ".join(f"m.{k}" for k in SAMPLE_COLUMNS)
    with store._tx(write=False) as c:
        rows = _x(store, c, f"SELECT {cols}, count(*) OVER () FROM crm_members m WHERE {compiled.sql} "
                            "ORDER BY m.member LIMIT ?", (*compiled.params, sample)).fetchall()
    n = int(rows[0][-1]) if rows else 0
    return n, [dict(zip(SAMPLE_COLUMNS, r[:-1], strict=True)) for r in rows]


def count(store: Any, compiled: Compiled) -> int:
    """How many members match."""
    with store._tx(write=False) as c:
        return int(_x(store, c, f"SELECT count(*) FROM crm_members m WHERE {compiled.sql}",
                      compiled.params).fetchone()[0])


def export_rows(store: Any, compiled: Compiled) -> list[tuple[Any, ...]]:
    """Every matching member as EXPORT_COLUMNS, by member id."""
    cols = ", ".join(f"m.{k}" for k in EXPORT_COLUMNS)
    with store._tx(write=False) as c:
        return [tuple(r) for r in _x(store, c, f"SELECT {cols} FROM crm_members m WHERE {compiled.sql} "
                                               "ORDER BY m.member", compiled.params).fetchall()]
