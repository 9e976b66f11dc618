"""Member tags and hints for the tills: what head office knows, carried in member snapshots.

Tags are the names of the segments (saved and predefined) a member belongs to as of a date D;
hints are a few facts a cashier can use (lapsed N days, birthday this week, card almost full,
reorder due, usual product, tier about to change). `refresh_tags` computes both for every member
in bounded chunks (`store_tags.py` holds the SQL) and bumps the feed entry of each member whose
tags or hints changed, so every till has them after its next pull. See docs/HQ.md ("Tags").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..loyalty.program import Program
from ..loyalty.projections import add_months
from . import crm_store, segment_sql, store_tags
from .segments import EPOCH, PREDEFINED, AsOf, SegmentError, epoch_day, today_in
from .service import Hq

CHUNK = 5000  # members per transaction
LAPSED_MIN_DAYS = 14  # a shorter gap is an ordinary week, not worth a line on the panel
ALMOST_FULL = 2  # stamps missing to fill the card
REORDER_WITHIN_DAYS = 3  # a reorder due by D+3 (overdue ones too)
USUAL_MIN_VISITS = 2  # a product bought once is not "usual"
USUAL_WINDOW_DAYS = 365
TIER_NEAR = 10  # percent of the next tier's threshold still missing

Progress = Callable[[int, int], None]  # (members done, changed)


@dataclass(frozen=True)
class Refresh:
    """What one refresh did."""

    run: int
    as_of: dt.datetime
    segments: tuple[str, ...]
    members: int
    changed: int
    skipped: tuple[str, ...] = ()  # saved segments that no longer parse

    def to_json(self) -> dict[str, Any]:
        """The JSON `hq tags refresh` prints."""
        return {"run": self.run, "as_of": self.as_of.isoformat(), "segments": list(self.segments),
                "members": self.members, "changed": self.changed, "skipped": list(self.skipped)}


def hints_for(member: dict[str, Any], facts: dict[str, Any], asof: AsOf, program: Program | None) -> dict[str, Any]:
    """The hints of one member as of D from its read-model row and chunk facts (pure)."""
    out: dict[str, Any] = {}
    d = asof.day
    if member.get("last_day") is not None and d - int(member["last_day"]) >= LAPSED_MIN_DAYS:
        # The date, not the count of days: a count would change every day and move every lapsed
        # member's feed entry daily; the till counts the days itself.
        out["last_visit"] = (EPOCH + dt.timedelta(days=int(member["last_day"]))).isoformat()
    if member.get("birthday") and _birthday_within(str(member["birthday"]), asof.date, 7):
        out["birthday_week"] = True
    size = program.card.size if program else asof.card_size
    missing = size - max(int(member.get("balance") or 0), 0) % size
    if missing <= ALMOST_FULL:
        out["to_full_card"] = missing
    due = sorted((r["due"], r["category"]) for r in facts.get("reorder", [])
                 if r.get("due") and dt.date.fromisoformat(r["due"]) <= asof.date + dt.timedelta(REORDER_WITHIN_DAYS))
    if due:
        out["reorder"] = {"category": due[0][1], "due": due[0][0]}
    skus = [s for s in facts.get("skus", []) if s[2] >= USUAL_MIN_VISITS]
    if skus:
        sku, name, _, _ = max(skus, key=lambda s: (s[2], s[3], s[0]))
        out["usual"] = {"sku": sku, "name": name}
    if program is not None:
        measure = int(facts.get("measure", 0))
        higher = [t for t in program.tiers if t.threshold > measure]
        if higher and member.get("tier") != higher[0].id:
            nxt = higher[0]
            gap = nxt.threshold - measure
            if gap <= max(1, nxt.threshold * TIER_NEAR // 100):
                out["tier_next"] = {"tier": nxt.id, "name": nxt.name, "missing": gap}
    return out


def _birthday_within(birthday: str, d: dt.date, days: int) -> bool:
    """True when the birthday's month and day fall on D … D+days-1 (29 Feb counts on 28 Feb)."""
    try:
        b = dt.date.fromisoformat(birthday)
    except ValueError:
        return False
    for k in range(days):
        day = d + dt.timedelta(k)
        if (b.month, b.day) == (day.month, day.day) or (
                (b.month, b.day) == (2, 29) and (day.month, day.day) == (2, 28) and not _leap(day.year)):
            return True
    return False


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def tag_names(store: Any) -> list[str]:
    """Every segment a member can be tagged with: the saved ones, then the predefined ones."""
    return [s.name for s in crm_store.list_segments(store)] + [n for n in PREDEFINED]


def refresh_tags(hq: Hq, as_of: dt.date | None = None, *, chunk: int = CHUNK,
                 progress: Progress | None = None) -> Refresh:
    """Recompute every member's tags and hints as of D (default today, store time); members whose
    row changed get a new feed entry. The run's as-of (D 00:00 store time) is published last."""
    from .crm import Crm, NotFound

    crm = Crm(hq)
    store: Any = hq.store
    asof = crm.asof(as_of)
    program = hq.program()
    start = asof.start_utc()
    names = tag_names(store)
    dialect = segment_sql.dialect_of(store)
    compiled: list[tuple[str, segment_sql.Compiled]] = []
    skipped: list[str] = []
    for name in names:
        try:
            seg = crm.definition(name)
        except (SegmentError, NotFound):
            # A saved segment that no longer parses (or was deleted meanwhile) must not stop every
            # other tag: it is left out of this run and named in its result.
            skipped.append(name)
            continue
        compiled.append((name, segment_sql.compile_segment(seg.root, asof, dialect)))
    run = store_tags.start_run(store, start, asof.day, [n for n, _ in compiled], hq.clock())
    for name, c in compiled:
        store_tags.fill_segment(store, run, name, c.where, c.params, pg=dialect == "pg")
    window = program.tiering.window_months if program else 12
    tier_since = add_months(start, -window).isoformat()
    qualify_on = program.tiering.qualify_on if program else "stamps"
    after, members, changed = "", 0, 0
    while rows := store_tags.member_chunk(store, after, chunk):
        lo, hi = after, rows[-1]["member"]
        facts = store_tags.chunk_facts(store, run, lo, hi, asof.day - USUAL_WINDOW_DAYS, asof.day,
                                       tier_since, start.isoformat(), qualify_on, USUAL_MIN_VISITS)
        out = []
        for m in rows:
            f = facts.get(m["member"], {})
            live = not m["erased"] and m["merged_into"] is None
            tags = f.get("tags", []) if live else []
            hints = hints_for(m, f, asof, program) if live else {}
            stored = f.get("stored")
            if stored is None and not tags and not hints:
                continue  # nothing to say and nothing said before: no row, no feed entry
            if stored is None or stored[0] != tags or stored[1] != hints:
                out.append((m["member"], tags, hints))
        store_tags.put_changed(store, run, start, out, hq.clock())
        members += len(rows)
        changed += len(out)
        after = hi
        if progress:
            progress(members, changed)
    store_tags.finish_run(store, run, members, changed)
    return Refresh(run, start, tuple(n for n, _ in compiled), members, changed, tuple(skipped))


def refresh_if_due(hq: Hq, now: dt.datetime | None = None) -> Refresh | None:
    """Refresh the tags when the newest complete run is from before today (store time): the flow
    scheduler calls it on each tick it holds the lease for, so tags are at most a day old."""
    program = hq.program()
    zone = program.timezone if program else "Asia/Jakarta"
    today = today_in(zone, now or hq.clock())
    last = store_tags.latest_run(hq.store)
    if last is not None and last["as_of_day"] >= epoch_day(today):
        return None
    return refresh_tags(hq, today)


__all__ = ["Refresh", "hints_for", "refresh_if_due", "refresh_tags", "tag_names"]
