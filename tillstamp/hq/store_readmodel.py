"""The CRM read model's SQL (`crm_members`, `sale_lines`), shared by both HQ backends.

A mixin of `SqlHqStore`: ingest and import call `_crm_after_ingest` inside their own
transaction; `rebuild_crm` recomputes the read model from the events into the
`*_rebuild` tables chunk by chunk, then either swaps it in or compares it with the live one.
What a batch means is decided in `rm.py`; here are only the statements.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..loyalty import events as ev
from ..loyalty.events import Event, canonical, derived_id
from ..loyalty.program import Program, parse_program
from ..loyalty.projections import add_months, tier_at, tier_for
from . import readmodel as rm
from .readmodel import SALE_LINE_COLS, CrmBatch, Figures

MEMBER_COLS = ("member", "phone", "name", "email", "birthday", "external_id", "store", "enrolled_at",
               "enrolled_day", "consent_whatsapp", "consent_email", "consent_sms", "balance", "tier", "badges",
               "first_day", "last_day", "visits", "spend", "fav_category", "fav_store", "usual_hour",
               "usual_weekday", "merged_into", "erased")
PII_COLS = ("phone", "name", "email", "birthday")
_IN_CHUNK = 5000  # ids per IN (...) list: far below SQLite's bound on parameters


class TierMove(NamedTuple):
    """A batch's tier steps (`readmodel.tier_steps`) with what applying them needs: the
    program and the key its kept sums must have been taken under."""

    prog: Program
    key: str
    steps: dict[str, rm.TierStep]


class CrmPre(NamedTuple):
    """A batch's read-model fold and tier steps worked out before the hook runs (PostgreSQL:
    chunk by chunk in the thread that decodes, while the database applies the chunk before),
    under the program of version `version`."""

    version: int
    batch: CrmBatch
    tier_events: rm.TierEvents
    steps: dict[str, rm.TierStep] | None  # once the last chunk is folded (tiers on stamps)


def crm_pre(before: CrmPre | None, events: Sequence[Sequence[Any]], program: tuple[int, Program],
            last: bool) -> CrmPre:
    """`before` (the earlier chunks) followed by `events`; with `last`, the tier steps too.
    Pure work on the events: it may run in any thread. `before` is extended in place (a
    chunk's fold goes on from the fold before it, as one fold of the batch would)."""
    version, prog = program
    tiers: rm.TierEvents = {} if before is None else before.tier_events
    batch = rm.digest(events, prog.timezone, None if before is None else before.batch, tiers)
    steps = None
    if last and prog.tiering.qualify_on == "stamps":
        steps = rm.tier_steps(tiers, prog.zone, prog.tiering.window_months)
    return CrmPre(version, batch, tiers, steps)


class Tables(NamedTuple):
    """Where a read model lives: the live tables, or the ones a rebuild fills."""

    members: str
    lines: str
    days: str  # per (member, store-local day, store): visits and spend of non-voided sales


LIVE = Tables("crm_members", "sale_lines", "member_days")
NEXT = Tables("crm_members_rebuild", "sale_lines_rebuild", "member_days_rebuild")
DAY_COLS = ("member", "day", "store", "visits", "spend")
_DAYS_IN = 400  # days in one keyed rollup refresh; more and the whole member is refreshed


@dataclass
class VerifyReport:
    """Live read model against a rebuild: equal, or which rows differ and how."""

    ok: bool
    members: int = 0
    lines: int = 0
    member_diffs: list[dict[str, Any]] = field(default_factory=list)
    line_diffs: list[dict[str, Any]] = field(default_factory=list)
    day_diffs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        out: dict[str, Any] = {"ok": self.ok, "members": self.members, "lines": self.lines}
        if not self.ok:
            out["member_diffs"] = self.member_diffs
            out["line_diffs"] = self.line_diffs
            out["day_diffs"] = self.day_diffs
        return out


Progress = Callable[[int, int], None]  # (events done, events in all)


def _chunks(items: Sequence[str], n: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def event_tuple(e: Event) -> tuple[Any, ...]:
    """An Event in EVENT_COLS order (without digest), as the read model folds it."""
    w = e.to_wire()
    return (e.id, e.terminal, e.store, e.seq, e.kind, e.member, w["at"], e.stamps, e.ref, canonical(e.body).decode())


class CrmStore:
    """Read-model maintenance; mixed into `SqlHqStore` (which supplies `_x`, `_many`, `_any`, `_tx`)."""

    _x: Callable[..., Any]
    _many: Callable[..., None]
    _any: Callable[..., tuple[str, list[Any]]]
    _tx: Callable[..., contextlib.AbstractContextManager[Any]]
    _crm_prog: tuple[int, Program | None] | None = None
    # Times are ISO text in UTC: they must compare byte by byte, never by a locale's collation
    # (which may skip punctuation); SQLite's default is already binary.
    BYTES = ""

    # -- the ingest hook -----------------------------------------------------------------

    def _crm_after_ingest(self, c: Any, events: Sequence[Sequence[Any]], adjustments: Sequence[Event],
                          pii: Sequence[str], *, new_sales: bool = False, pre: CrmPre | None = None) -> None:
        """Maintain the read model for a batch just stored, in the ingest's transaction.

        `new_sales`: the caller knows none of the batch's sales is held yet (import), so the
        figures of members with no lines before this batch come from the lines in memory.
        `pre`: `events` already folded (`crm_pre`); used when taken under the current program."""
        prog = self._crm_program(c)
        if pre is not None and (adjustments or self._crm_prog is None or pre.version != self._crm_prog[0]):
            pre = None  # HQ's own adjustments join the batch, or the program changed meanwhile
        facts: list[Sequence[Any]] = []
        if pre is None:
            facts = list(events) + [event_tuple(a) for a in adjustments]
        batch = pre.batch if pre is not None else rm.digest(facts, prog.timezone if prog else rm.DEFAULT_ZONE)
        spend = prog is not None and prog.tiering.qualify_on != "stamps"
        tiered = sorted(m for m, ch in batch.members.items() if (ch.spend_events if spend else ch.stamps_events))
        move = None
        if prog is not None and not spend and tiered:
            steps = pre.steps if pre is not None else None
            if steps is None:
                steps = rm.tier_steps(rm.tier_events(facts or events), prog.zone, prog.tiering.window_months)
            move = TierMove(prog, self._crm_tier_key(), steps)
        known = None
        if new_sales and batch.lines and not batch.refunds and not batch.merges:
            known = self._crm_with_lines(c, LIVE, sorted({r[2] for r in batch.lines if r[2] is not None}))
        whole: set[str] = set()
        slow: set[str] = set()  # members whose kept tier sums the batch could not move forward
        moved = self._crm_apply(c, batch, LIVE, prog, whole, move, slow)
        self._crm_pii(c, sorted(set(pii)), LIVE)
        if known is not None:
            fresh = rm.figures_from_lines(r for r in batch.lines if r[2] not in known)
            self._crm_write_figures(c, LIVE, fresh)
            self._crm_insert_days(c, LIVE, rm.days_from_lines(r for r in batch.lines if r[2] in fresh))
            moved -= set(fresh)
        self._crm_figures(c, LIVE, sorted(moved))
        # New lines change only their own days; a refund or a merge refreshes the whole member.
        self._crm_days(c, LIVE, sorted(whole & moved), None)
        self._crm_days(c, LIVE, sorted(moved - whole), sorted({r[8] for r in batch.lines}))
        if move is not None:  # the others' sums were moved forward with their member row
            tiered = sorted(slow | {m for m in tiered if m not in move.steps})
        self._crm_tiers(c, LIVE, prog, tiered)

    def _crm_program(self, c: Any) -> Program | None:
        row = self._x(c, "SELECT version, source FROM programs ORDER BY version DESC LIMIT 1").fetchone()
        if row is None:
            return None
        if self._crm_prog is None or self._crm_prog[0] != int(row[0]):
            self._crm_prog = (int(row[0]), parse_program(json.loads(row[1])))
        return self._crm_prog[1]

    def _crm_apply(self, c: Any, batch: CrmBatch, t: Tables, prog: Program | None,
                   whole: set[str] | None = None, move: TierMove | None = None,
                   slow: set[str] | None = None) -> set[str]:
        """Write a batch's members, lines, refunds and merges; returns members whose lines moved.

        `whole` receives the members whose older lines changed too (a refund or a merge);
        `move`, tier steps to apply with the members, and then `slow` the members it could not."""
        whole = set() if whole is None else whole
        zone = prog.timezone if prog else rm.DEFAULT_ZONE
        rows = []
        changes = sorted(batch.members.items())  # sorted once: the rows, then the consents
        for m, ch in changes:
            store = ch.enrolled_store if ch.enrolled_at else ch.store
            day = rm.local_time(ch.enrolled_at, zone).day if ch.enrolled_at else None
            rows.append((m, store, ch.enrolled_at, day, ch.balance))
        stuck = self._crm_upsert_members(c, t, rows, move)
        if slow is not None:
            slow |= stuck
        consents = [(m, ch.consent) for m, ch in changes if ch.consent]
        for ch_name in ev.CHANNELS if consents else ():
            self._many(c, f"UPDATE {t.members} SET consent_{ch_name} = ? WHERE member = ?",
                       [(int(got[ch_name]), m) for m, got in consents if ch_name in got])
        with_badges = sorted(m for m, ch in batch.members.items() if ch.badges)
        if with_badges:
            cond, params = self._any("member", with_badges)
            have = {r[0]: json.loads(r[1]) for r in self._x(
                c, f"SELECT member, badges FROM {t.members} WHERE {cond}", params).fetchall()}
            updates = []
            for m in with_badges:
                got = list(have.get(m, []))
                got += [b for b in batch.members[m].badges if b not in got]
                updates.append((json.dumps(got, separators=(",", ":")), m))
            self._many(c, f"UPDATE {t.members} SET badges = ? WHERE member = ?", updates)
        moved: set[str] = set()
        if batch.lines:
            members = sorted({r[2] for r in batch.lines if r[2] is not None})
            alias = self._crm_aliases(c, t, members)
            lines = [(*r[:2], alias.get(r[2], r[2]), *r[3:]) if r[2] in alias else r for r in batch.lines]
            lines.sort(key=lambda r: (r[0], r[1]))  # primary-key order: B-tree appends, not page hops
            self._crm_insert_lines(c, t, lines)
            moved |= {r[2] for r in lines if r[2] is not None}
        for refund in batch.refunds:
            refunded = self._crm_refund(c, t, refund)
            moved |= refunded
            whole |= refunded
        for alias_id, into in batch.merges:
            self._crm_upsert_members(c, t, [(into, None, None, None, 0)])
            self._x(c, f"UPDATE {t.lines} SET member = ? WHERE member = ?", (into, alias_id))
            self._x(c, f"UPDATE {t.members} SET merged_into = ? WHERE member = ?", (into, alias_id))
            moved |= {alias_id, into}
            whole |= {alias_id, into}
        return moved

    def _crm_upsert_members(self, c: Any, t: Tables, rows: Sequence[tuple[Any, ...]],
                            move: TierMove | None = None) -> set[str]:
        """Create or update members from (member, store, enrolled_at, enrolled_day, balance change),
        and move their kept tier sums forward by `move`; returns the members `move` could not.

        The store is where the member enrolled, else where they were first seen."""
        self._many(c, f"INSERT INTO {t.members}(member, store, enrolled_at, enrolled_day, balance) "
                      f"VALUES (?, ?, ?, ?, ?) {member_upsert(t)}", rows)
        return set() if move is None else self._crm_tiers_step(c, t, move)

    def _crm_insert_lines(self, c: Any, t: Tables, lines: Sequence[tuple[Any, ...]]) -> None:
        """Insert sale lines (a sale already held keeps its lines)."""
        self._many(c, f"INSERT INTO {t.lines}({', '.join(SALE_LINE_COLS)}) "
                      f"VALUES ({', '.join('?' * len(SALE_LINE_COLS))}) ON CONFLICT(sale, line) DO NOTHING", lines)

    def _crm_aliases(self, c: Any, t: Tables, members: Sequence[str]) -> dict[str, str]:
        """Members among these that were merged into another, and the survivor."""
        out: dict[str, str] = {}
        for part in _chunks(members):
            cond, params = self._any("member", part)
            out.update(self._x(c, f"SELECT member, merged_into FROM {t.members} WHERE merged_into IS NOT NULL "
                                  f"AND {cond}", params).fetchall())
        return out

    def _crm_refund(self, c: Any, t: Tables, refund: rm.Refund) -> set[str]:
        """Net the refunded quantities and amounts out of the sale's lines."""
        row = self._x(c, "SELECT id, body FROM events WHERE kind = 'sale.recorded' AND store = ? AND ref = ? "
                         "AND terminal = ?", (refund.store, refund.ref, refund.terminal)).fetchone()
        if row is None:  # not a sale this terminal recorded: nothing to net
            return set()
        sale_id, body = row[0], json.loads(row[1])
        held = self._x(c, f"SELECT line, qty, member FROM {t.lines} WHERE sale = ?", (sale_id,)).fetchall()
        if not held:
            return set()
        changed, voided = rm.refunded_lines(body.get("lines") or [], int(body.get("discount", 0) or 0),
                                             {int(r[0]): int(r[1]) for r in held}, refund.lines)
        self._many(c, f"UPDATE {t.lines} SET qty = ?, amount = ? WHERE sale = ? AND line = ?",
                   [(q, a, sale_id, i) for i, (q, a) in sorted(changed.items())])
        if voided:
            self._x(c, f"UPDATE {t.lines} SET voided = 1 WHERE sale = ?", (sale_id,))
        return {r[2] for r in held if r[2] is not None}

    def _crm_pii(self, c: Any, ids: Sequence[str] | None, t: Tables) -> None:
        """Copy the profile (phone, name, email, birthday, external id) from `members`; `None`: all."""
        sql = "SELECT id, phone, name, email, birthday, external_id FROM members"
        parts: list[Sequence[str] | None] = [None] if ids is None else list(_chunks(ids))
        for part in parts:
            if part is not None and not part:
                continue
            if part is None:
                rows = self._x(c, sql + " ORDER BY id").fetchall()
            else:
                cond, params = self._any("id", part)
                rows = self._x(c, f"{sql} WHERE {cond} ORDER BY id", params).fetchall()
            self._many(c, f"INSERT INTO {t.members}(member, phone, name, email, birthday, external_id) "
                          "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(member) DO UPDATE SET phone = excluded.phone, "
                          "name = excluded.name, email = excluded.email, birthday = excluded.birthday, "
                          f"external_id = coalesce(excluded.external_id, {t.members}.external_id)",
                       [tuple(r) for r in rows])

    def _crm_erase(self, c: Any, member: str) -> None:
        """Scrub a member's PII from the read model (the figures stay: they are not personal data)."""
        self._x(c, f"UPDATE {LIVE.members} SET phone = NULL, name = NULL, email = NULL, birthday = NULL, "
                   "external_id = NULL, erased = 1 WHERE member = ?", (member,))

    # -- the day rollup -------------------------------------------------------------------

    def _crm_days(self, c: Any, t: Tables, members: Sequence[str] | None, days: Sequence[int] | None) -> None:
        """Recompute `member_days` from the lines for `members` (`None`: everyone), only on
        `days` when given: deleting and regrouping a superset of the changed keys is exact."""
        if members is not None and not members:
            return
        if days is not None and len(days) > _DAYS_IN:
            days = None
        for part in [None] if members is None else list(_chunks(members)):
            if part is None:
                cond, params = "member IS NOT NULL", list[Any]()
            else:
                cond, params = self._any("member", part)
            if days is not None:
                dcond, dparams = self._any("day", days)
                cond, params = f"{cond} AND {dcond}", [*params, *dparams]
            self._x(c, f"DELETE FROM {t.days} WHERE {cond}", params)
            self._x(c, f"INSERT INTO {t.days}({', '.join(DAY_COLS)}) SELECT member, day, store, "
                       f"count(DISTINCT sale), sum(amount) FROM {t.lines} WHERE voided = 0 AND {cond} "
                       "GROUP BY member, day, store", params)

    def _crm_insert_days(self, c: Any, t: Tables, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert rollup rows computed in memory (members who had no lines before)."""
        self._many(c, f"INSERT INTO {t.days}({', '.join(DAY_COLS)}) VALUES (?, ?, ?, ?, ?)", rows)

    def refresh_day_rollup(self) -> None:
        """Recompute `member_days` from `sale_lines` (for data written straight into the lines)."""
        with self._tx() as c:
            self._crm_days(c, LIVE, None, None)

    # -- figures and tiers ----------------------------------------------------------------

    def _crm_with_lines(self, c: Any, t: Tables, members: Sequence[str]) -> set[str]:
        """Those of `members` that already have lines, or were merged into another member."""
        out: set[str] = set()
        for part in _chunks(members):
            cond, params = self._any("member", part)
            out |= {r[0] for r in self._x(c, f"SELECT DISTINCT member FROM {t.lines} WHERE {cond}", params)}
            out |= {r[0] for r in self._x(c, f"SELECT member FROM {t.members} WHERE merged_into IS NOT NULL "
                                             f"AND {cond}", params)}
        return out

    def _crm_write_figures(self, c: Any, t: Tables, figures: dict[str, Figures]) -> None:
        self._many(c, f"UPDATE {t.members} SET first_day = ?, last_day = ?, visits = ?, spend = ?, "
                      "fav_category = ?, fav_store = ?, usual_hour = ?, usual_weekday = ? WHERE member = ?",
                   [(*_figure_values(f), m) for m, f in sorted(figures.items())])

    def _crm_figures(self, c: Any, t: Tables, members: Sequence[str] | None) -> None:
        """Recompute per-member figures from the lines, for `members` (`None`: every member)."""
        if members is not None and not members:
            return
        for part in [None] if members is None else list(_chunks(members)):
            figures = self._crm_figures_of(c, t, part)
            keys = sorted(figures) if part is None else list(part)
            none = Figures(None, None, 0, 0, None, None, None, None)
            self._many(c, f"UPDATE {t.members} SET first_day = ?, last_day = ?, visits = ?, spend = ?, "
                          "fav_category = ?, fav_store = ?, usual_hour = ?, usual_weekday = ? WHERE member = ?",
                       [(*_figure_values(figures.get(m, none)), m) for m in keys])

    def _crm_figures_of(self, c: Any, t: Tables, part: Sequence[str] | None) -> dict[str, Figures]:
        """Two scans of the members' lines: one row per visit, one per (member, category)."""
        if part is None:
            cond, params = "member IS NOT NULL", list[Any]()
        else:
            cond, params = self._any("member", part)
        where = f"WHERE voided = 0 AND {cond}"
        visits: dict[str, list[rm.Visit]] = {}
        for m, store, day, hour, weekday, amount in self._x(
                c, f"SELECT member, min(store), min(day), min(local_hour), min(weekday), sum(amount) FROM {t.lines} "
                   f"{where} GROUP BY member, sale", params).fetchall():
            visits.setdefault(m, []).append((store, int(day), int(hour), int(weekday), int(amount or 0)))
        cats: dict[str, dict[Any, tuple[int, int]]] = {}
        for m, cat, n, spend in self._x(
                c, f"SELECT member, category, count(DISTINCT sale), sum(amount) FROM {t.lines} {where} "
                   "AND category IS NOT NULL GROUP BY member, category", params).fetchall():
            cats.setdefault(m, {})[cat] = (int(n), int(spend or 0))
        return rm.figures_of(visits, cats)

    def _crm_tiers(self, c: Any, t: Tables, prog: Program | None, members: Sequence[str] | None) -> None:
        """Each member's tier as of their last event that counts for tiers (`None`: every member).

        The same answer as `projections.tier_at` on those events: with tiers earned on stamps,
        the two window sums are taken in SQL (a Python fold over every event of every member
        touched cost more than the rest of ingest); tiers earned on spend fold in Python."""
        if prog is None or (members is not None and not members):
            return
        if prog.tiering.qualify_on != "stamps":
            self._crm_tiers_folded(c, t, prog, members)
            return
        kcond, kparams = self._any("e.kind", sorted(ev.EARNING_KINDS | {ev.REVERSED}))
        x = self.BYTES
        last: dict[str, str] = {}
        if members is None:  # everyone (a rebuild): one pass over the events
            last.update(self._x(c, f"SELECT e.member, max(e.at{x}) FROM events e WHERE e.member IS NOT NULL "
                                   f"AND e.stamps <> 0 AND {kcond} GROUP BY e.member", kparams).fetchall())
        # A batch's members (ingest): a correlated sub-select per member walks that member's
        # entries of `events_by_member` (PostgreSQL; `events_tier` on SQLite). A join grouped
        # over the events let PostgreSQL scan and sort every tier event of the chunk's kinds,
        # twice per 2,000 members (a third of ingest).
        for part in [] if members is None else list(_chunks(members, 1000)):
            rows_sql, rows_params = self._crm_rows(list(part), 1)
            last.update((m, at) for m, at in self._x(
                c, f"WITH b(member) AS ({rows_sql}) SELECT b.member, (SELECT max(e.at{x}) FROM events e "
                   f"WHERE e.member = b.member AND e.stamps <> 0 AND {kcond}) FROM b",
                [*rows_params, *kparams]).fetchall() if at is not None)
        names = sorted(last)
        zone, window = prog.zone, prog.tiering.window_months
        for part in _chunks(names, 1000):
            bounds: list[Any] = []
            for m in part:
                upto = _at(last[m])
                local = upto.astimezone(zone)
                ystart = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
                bounds += [m, _iso(add_months(upto, -window)), _iso(upto), _iso(add_months(ystart, -window)),
                           _iso(ystart)]
            rows_sql, rows_params = self._crm_rows(bounds, 5)
            if members is None:
                win = f"e.at > b.since{x} AND e.at <= b.upto{x}"
                sql = (f"WITH b(member, since, upto, ysince, ystart) AS ({rows_sql}) SELECT b.member, "
                       f"sum(CASE WHEN {win} THEN e.stamps ELSE 0 END), "
                       f"sum(CASE WHEN e.at > b.ysince{x} AND e.at <= b.ystart{x} THEN e.stamps ELSE 0 END), "
                       f"min(CASE WHEN {win} THEN e.at{x} END) "
                       f"FROM b JOIN events e ON e.member = b.member WHERE e.stamps <> 0 AND {kcond} "
                       f"AND e.at > b.ysince{x} GROUP BY b.member")
                params = [*rows_params, *kparams]
            else:
                sub = f"FROM events e WHERE e.member = b.member AND e.stamps <> 0 AND {kcond} "
                win = f"AND e.at > b.since{x} AND e.at <= b.upto{x})"
                sql = (f"WITH b(member, since, upto, ysince, ystart) AS ({rows_sql}) SELECT b.member, "
                       f"(SELECT sum(e.stamps) {sub}{win}, "
                       f"(SELECT sum(e.stamps) {sub}AND e.at > b.ysince{x} AND e.at <= b.ystart{x}), "
                       f"(SELECT min(e.at{x}) {sub}{win} FROM b")
                params = [*rows_params, *kparams, *kparams, *kparams]
            sums = {r[0]: (int(r[1] or 0), int(r[2] or 0), r[3]) for r in self._x(c, sql, params).fetchall()}
            key = self._crm_tier_key()
            rows = []
            for m in part:
                now_sum, year_sum, oldest = sums.get(m, (0, 0, None))
                rows.append((tier_of(prog, now_sum, year_sum), last[m], now_sum, year_sum, oldest, key, m))
            self._crm_set_tiers(c, t, rows)

    def _crm_tier_key(self) -> str:
        """Which program the kept window sums were taken under (its version)."""
        return str(self._crm_prog[0]) if self._crm_prog else ""

    def _crm_tiers_step(self, c: Any, t: Tables, move: TierMove) -> set[str]:
        """Move the kept window sums forward by a batch's events, without reading older events;
        returns the members this cannot do (no sums kept under this program, a window that now
        leaves an older event behind, a new year, a batch event older than the kept last one),
        for the query. PostgreSQL does the same in the statement that updates the member row.

        Each member keeps the last event's time (`tier_upto`), the two sums and the oldest
        event inside the window: while the window's start stays before that oldest event,
        no event leaves the window, so the new sums are the old ones plus the batch's events
        that fall in the windows (an event is stored once and folded once)."""
        members = sorted(move.steps)
        kept: dict[str, tuple[Any, ...]] = {}
        for part in _chunks(members):
            cond, params = self._any("member", part)
            kept.update((r[0], tuple(r[1:])) for r in self._x(
                c, f"SELECT member, tier_upto, tier_sum, tier_year_sum, tier_oldest, tier_key FROM {t.members} "
                   f"WHERE {cond}", params).fetchall())
        slow: set[str] = set()
        rows = []
        for m in members:
            step, st = move.steps[m], kept.get(m)
            if st is None or not tier_step_fits(st, step, move.key):
                slow.add(m)
                continue
            now_sum, year_sum = int(st[1]) + step.now, int(st[2]) + step.year
            oldest = min([x for x in (st[3], step.oldest) if x is not None], default=None)
            rows.append((tier_of(move.prog, now_sum, year_sum), step.upto, now_sum, year_sum, oldest, move.key, m))
        self._crm_set_tiers(c, t, rows)
        return slow

    def _crm_set_tiers(self, c: Any, t: Tables, rows: Sequence[tuple[Any, ...]]) -> None:
        """Write (tier, upto, sum, year sum, oldest, key, member) rows."""
        self._many(c, f"UPDATE {t.members} SET tier = ?, tier_upto = ?, tier_sum = ?, tier_year_sum = ?, "
                      "tier_oldest = ?, tier_key = ? WHERE member = ?", rows)

    def _crm_rows(self, flat: Sequence[Any], width: int) -> tuple[str, list[Any]]:
        """A row source of text columns for a WITH clause, from values given row after row."""
        return "VALUES " + ", ".join(["(" + ", ".join("?" * width) + ")"] * (len(flat) // width)), list(flat)

    def _crm_tiers_folded(self, c: Any, t: Tables, prog: Program, members: Sequence[str] | None) -> None:
        kcond, kparams = self._any("kind", [ev.SALE, ev.CLAIMED, ev.REFUNDED])
        for part in [None] if members is None else list(_chunks(members)):
            cond, params = ("member IS NOT NULL", list[Any]()) if part is None else self._any("member", part)
            per: dict[str, list[Event]] = {}
            for m, kind, at, stamps, body in self._x(
                    c, f"SELECT member, kind, at, stamps, body FROM events WHERE {cond} AND {kcond} ORDER BY gseq",
                    [*params, *kparams]).fetchall():
                per.setdefault(m, []).append(Event("", kind, _at(at), m, int(stamps), None, json.loads(body)))
            self._many(c, f"UPDATE {t.members} SET tier = ? WHERE member = ?",
                       [(tier_at(prog, es, max(e.at for e in es)).id, m) for m, es in sorted(per.items())])

    # -- reading the record --------------------------------------------------------------

    def crm_member(self, *, member: str | None = None, phone: str | None = None,
                   external: str | None = None) -> dict[str, Any] | None:
        """A member's read-model row, found by id, phone (E.164) or external id."""
        col, val = ("member", member) if member else ("phone", phone) if phone else ("external_id", external)
        with self._tx(write=False) as c:
            row = self._x(c, f"SELECT {', '.join(MEMBER_COLS)} FROM {LIVE.members} WHERE {col} = ? "
                             "ORDER BY member LIMIT 1", (val,)).fetchone()
        return dict(zip(MEMBER_COLS, row, strict=True)) if row else None

    def crm_windows(self, member: str, today: int, windows: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Visits and spend of a member in the last N days (store days today-N+1 .. today) for each N."""
        parts = []
        params: list[Any] = []
        for n in windows:
            parts.append("count(DISTINCT CASE WHEN day > ? AND day <= ? THEN sale END), "
                         "sum(CASE WHEN day > ? AND day <= ? THEN amount ELSE 0 END)")
            params += [today - n, today, today - n, today]
        with self._tx(write=False) as c:
            row = self._x(c, f"SELECT {', '.join(parts)} FROM {LIVE.lines} WHERE member = ? AND voided = 0",
                          [*params, member]).fetchone()
        return {n: (int(row[2 * i] or 0), int(row[2 * i + 1] or 0)) for i, n in enumerate(windows)}

    def crm_sales(self, member: str, limit: int = 50) -> list[dict[str, Any]]:
        """A member's latest sales, newest first, each with its lines."""
        with self._tx(write=False) as c:
            rows = self._x(c, f"SELECT {', '.join(SALE_LINE_COLS)} FROM {LIVE.lines} WHERE sale IN "
                              f"(SELECT sale FROM {LIVE.lines} WHERE member = ? GROUP BY sale "
                              "ORDER BY max(at_utc) DESC, sale LIMIT ?) ORDER BY at_utc DESC, sale, line",
                           (member, limit)).fetchall()
        sales: dict[str, dict[str, Any]] = {}
        for r in rows:
            d = dict(zip(SALE_LINE_COLS, r, strict=True))
            sale = sales.get(d["sale"])
            if sale is None:
                sale = sales[d["sale"]] = {k: d[k] for k in ("sale", "store", "terminal", "receipt", "at_utc",
                                                             "local_date")}
                sale.update(voided=bool(d["voided"]), total=0, lines=[])
            sale["total"] += int(d["amount"])
            sale["lines"].append({k: d[k] for k in ("line", "sku", "name", "category", "qty", "amount")})
        return list(sales.values())

    # -- import ------------------------------------------------------------------------

    def import_members(self, externals: Sequence[str], now: dt.datetime) -> tuple[dict[str, str], int]:
        """Member ids for external ids: the member already holding one, else a new member
        (id derived from the external id) created with it. Returns (ids, how many are new)."""
        ids: dict[str, str] = {}
        with self._tx() as c:
            for part in _chunks(externals):
                cond, params = self._any("external_id", part)
                ids.update(self._x(c, f"SELECT external_id, id FROM members WHERE {cond}", params).fetchall())
            new = [(derived_id("import-member", x), x) for x in externals if x not in ids]
            erased: set[str] = set()
            for part in _chunks([m for m, _ in new]):
                cond, params = self._any("member", part)
                erased |= {r[0] for r in self._x(c, f"SELECT member FROM erasures WHERE {cond}", params).fetchall()}
            self._many(c, "INSERT INTO members(id, origin, updated_at, external_id) VALUES (?, 'import', ?, ?) "
                          "ON CONFLICT(id) DO UPDATE SET external_id = excluded.external_id",
                       [(m, _iso(now), x) for m, x in new if m not in erased])
            self._crm_pii(c, sorted(m for m, _ in new if m not in erased), LIVE)
        ids.update((x, m) for m, x in new)
        return ids, len(new)

    def _import_events(self, c: Any, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert whole event rows (EVENT_COLS order)."""
        self._many(c, f"INSERT INTO events({', '.join(_EVENT_COLS)}) VALUES ({', '.join('?' * len(_EVENT_COLS))}) "
                      "ON CONFLICT(id) DO NOTHING", rows)

    # -- rebuild and verify --------------------------------------------------------------

    def rebuild_crm(self, *, chunk: int = 20000, progress: Progress | None = None, swap: bool = True) -> VerifyReport:
        """Recompute the read model from the events in chunks; swap it in, or (`swap=False`)
        compare it with the live one."""
        with self._tx() as c:
            for name in NEXT:
                self._x(c, f"DELETE FROM {name}")
            mark = int(self._x(c, "SELECT coalesce(max(gseq), 0) FROM events").fetchone()[0])
        after = done = 0
        while after < mark:
            with self._tx() as c:
                prog = self._crm_program(c)
                rows = self._x(c, f"SELECT gseq, {_FOLD_COLS} FROM events WHERE gseq > ? AND gseq <= ? "
                                  "ORDER BY gseq LIMIT ?", (after, mark, chunk)).fetchall()
                if not rows:
                    break
                after = int(rows[-1][0])
                self._crm_apply(c, rm.digest([r[1:] for r in rows], prog.timezone if prog else rm.DEFAULT_ZONE),
                                NEXT, prog)
            done += len(rows)
            if progress is not None:
                progress(done, mark)
        with self._tx() as c:
            self._crm_lock_events(c)  # events committed after `mark` are folded in below
            prog = self._crm_program(c)
            rows = self._x(c, f"SELECT gseq, {_FOLD_COLS} FROM events WHERE gseq > ? ORDER BY gseq",
                           (after,)).fetchall()
            if rows:
                self._crm_apply(c, rm.digest([r[1:] for r in rows], prog.timezone if prog else rm.DEFAULT_ZONE),
                                NEXT, prog)
            self._crm_pii(c, None, NEXT)
            self._x(c, f"UPDATE {NEXT.members} SET phone = NULL, name = NULL, email = NULL, birthday = NULL, "
                       "external_id = NULL, erased = 1 WHERE member IN (SELECT member FROM erasures)")
            self._crm_figures(c, NEXT, None)
            self._crm_days(c, NEXT, None, None)
            self._crm_tiers(c, NEXT, prog, None)
            if swap:
                report = VerifyReport(ok=True, members=int(self._x(c, f"SELECT count(*) FROM {NEXT.members}").fetchone()[0]),
                                      lines=int(self._x(c, f"SELECT count(*) FROM {NEXT.lines}").fetchone()[0]))
                for live, nxt in zip(LIVE, NEXT, strict=True):
                    self._x(c, f"DELETE FROM {live}")
                    self._x(c, f"INSERT INTO {live} SELECT * FROM {nxt}")
            else:
                report = self._crm_compare(c)
            for name in NEXT:
                self._x(c, f"DELETE FROM {name}")
        return report

    def verify_crm(self, *, chunk: int = 20000, progress: Progress | None = None) -> VerifyReport:
        """Whether the live read model equals a rebuild from the events."""
        return self.rebuild_crm(chunk=chunk, progress=progress, swap=False)

    def _crm_lock_events(self, c: Any) -> None:
        """Hold off ingest until this transaction ends (SQLite's write transaction already does)."""

    def _crm_compare(self, c: Any, limit: int = 20) -> VerifyReport:
        cols = ", ".join(MEMBER_COLS)
        diff_m = sorted({r[0] for r in self._x(
            c, f"SELECT member FROM (SELECT {cols} FROM {LIVE.members} EXCEPT SELECT {cols} FROM {NEXT.members}) a "
               f"UNION SELECT member FROM (SELECT {cols} FROM {NEXT.members} EXCEPT SELECT {cols} FROM {LIVE.members}) b"
        ).fetchall()})
        lcols = ", ".join(SALE_LINE_COLS)
        diff_l = sorted({(r[0], int(r[1])) for r in self._x(
            c, f"SELECT sale, line FROM (SELECT {lcols} FROM {LIVE.lines} EXCEPT SELECT {lcols} FROM {NEXT.lines}) a "
               f"UNION SELECT sale, line FROM (SELECT {lcols} FROM {NEXT.lines} EXCEPT "
               f"SELECT {lcols} FROM {LIVE.lines}) b").fetchall()})
        dcols = ", ".join(DAY_COLS)
        diff_d = sorted({(r[0], int(r[1]), r[2]) for r in self._x(
            c, f"SELECT member, day, store FROM (SELECT {dcols} FROM {LIVE.days} EXCEPT SELECT {dcols} "
               f"FROM {NEXT.days}) a UNION SELECT member, day, store FROM (SELECT {dcols} FROM {NEXT.days} "
               f"EXCEPT SELECT {dcols} FROM {LIVE.days}) b").fetchall()})
        report = VerifyReport(ok=not diff_m and not diff_l and not diff_d,
                              members=int(self._x(c, f"SELECT count(*) FROM {NEXT.members}").fetchone()[0]),
                              lines=int(self._x(c, f"SELECT count(*) FROM {NEXT.lines}").fetchone()[0]))
        for m in diff_m[:limit]:
            live = self._x(c, f"SELECT {cols} FROM {LIVE.members} WHERE member = ?", (m,)).fetchone()
            nxt = self._x(c, f"SELECT {cols} FROM {NEXT.members} WHERE member = ?", (m,)).fetchone()
            report.member_diffs.append({"member": m, "columns": _diff(MEMBER_COLS, live, nxt)})
        for sale, line in diff_l[:limit]:
            live = self._x(c, f"SELECT {lcols} FROM {LIVE.lines} WHERE sale = ? AND line = ?", (sale, line)).fetchone()
            nxt = self._x(c, f"SELECT {lcols} FROM {NEXT.lines} WHERE sale = ? AND line = ?", (sale, line)).fetchone()
            report.line_diffs.append({"sale": sale, "line": line, "columns": _diff(SALE_LINE_COLS, live, nxt)})
        for m, day, store in diff_d[:limit]:
            key = (m, day, store)
            sql = "SELECT {} FROM {} WHERE member = ? AND day = ? AND store = ?"
            live = self._x(c, sql.format(dcols, LIVE.days), key).fetchone()
            nxt = self._x(c, sql.format(dcols, NEXT.days), key).fetchone()
            report.day_diffs.append({"member": m, "day": day, "store": store,
                                     "columns": _diff(DAY_COLS, live, nxt)})
        return report


_FOLD_COLS = "id, terminal, store, seq, kind, member, at, stamps, ref, body"
_WIRE = ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body")
_EVENT_COLS = (*_WIRE, "digest")


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def tier_of(prog: Program, now_sum: int, year_sum: int) -> str:
    """The tier id for the window sums, as `projections.tier_at` decides it."""
    tier = tier_for(prog, max(now_sum, 0))
    if prog.tiering.downgrade != "immediate" and tier is not prog.tiers[-1]:
        held = tier_for(prog, max(year_sum, 0))
        tier = held if held.threshold > tier.threshold else tier
    return tier.id


def tier_step_fits(kept: Sequence[Any], step: rm.TierStep, key: str) -> bool:
    """Whether a member's kept tier state (upto, sum, year sum, oldest, key) can be moved
    forward by `step` alone: sums kept under this program, ending at or before the batch's
    last event and in its local year, with no kept event leaving the new window."""
    upto, now_sum, year_sum, oldest, got_key = kept
    return (got_key == key and upto is not None and now_sum is not None and year_sum is not None
            and step.ystart <= upto <= step.upto and (oldest is None or oldest > step.since))


def member_upsert(t: Tables) -> str:
    """ON CONFLICT clause of a member upsert: the store is where the member enrolled, else
    where first seen; the enrolment is the first one; balance changes add up."""
    m = t.members
    return ("ON CONFLICT(member) DO UPDATE SET "
            f"store = CASE WHEN {m}.enrolled_at IS NULL AND excluded.enrolled_at IS NOT NULL "
            f"THEN excluded.store ELSE coalesce({m}.store, excluded.store) END, "
            f"enrolled_at = coalesce({m}.enrolled_at, excluded.enrolled_at), "
            f"enrolled_day = coalesce({m}.enrolled_day, excluded.enrolled_day), "
            f"balance = {m}.balance + excluded.balance")


def _figure_values(f: Figures) -> tuple[Any, ...]:
    return (f.first_day, f.last_day, f.visits, f.spend, f.fav_category, f.fav_store, f.usual_hour, f.usual_weekday)


def _diff(cols: Sequence[str], live: Sequence[Any] | None, rebuilt: Sequence[Any] | None) -> dict[str, Any]:
    """Columns that differ: {column: {"live": value, "rebuilt": value}} (a missing row: every column)."""
    out = {}
    for i, col in enumerate(cols):
        a = None if live is None else live[i]
        b = None if rebuilt is None else rebuilt[i]
        if a != b or live is None or rebuilt is None:
            out[col] = {"live": a, "rebuilt": b}
    return out
