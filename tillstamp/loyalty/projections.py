"""What a member has, as pure functions of their events: balance, expiry, tier, card, missions.

The till and head office call these same functions on the same events, so they agree.
Events are taken in the order given (a till's sequence, or head office's merge order).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from . import events as ev
from .events import Event
from .program import Mission, Program, Tier


def add_months(t: dt.datetime, months: int) -> dt.datetime:
    """The same moment `months` later, clamped to the end of a shorter month."""
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = (nxt - dt.timedelta(days=1)).day
    return t.replace(year=year, month=month, day=min(t.day, last))


@dataclass
class Lot:
    """Stamps earned together, which expire together."""

    event_id: str
    earned_at: dt.datetime
    expires_at: dt.datetime | None
    remaining: int


@dataclass(frozen=True)
class Expiring:
    """Stamps that will expire at `at` unless spent first."""

    stamps: int
    at: dt.datetime


def lots(program: Program, events: Iterable[Event]) -> tuple[list[Lot], int]:
    """Open lots after the events, oldest first, and any debt (stamps owed beyond all lots)."""
    open_lots, debt = _open_lots(events)
    months = program.expiry.months
    if months:
        for lot in open_lots:
            lot.expires_at = add_months(lot.earned_at, months)
    return open_lots, debt



def spend_lots(open_lots: Sequence[Lot], by_id: dict[str, list[Lot]], e: Event, need: int) -> int:
    """Take `need` stamps from the lots for event `e`; what the lots could not cover (debt)."""
    pool: Iterable[Lot] = open_lots  # oldest stamps are used first
    if e.kind == ev.EXPIRED:  # the written-off lot first, then the oldest
        lid = e.body.get("lot")
        targets = by_id.get(lid, []) if isinstance(lid, str) else []
        pool = chain(targets, (lot for lot in open_lots if lot.event_id != lid))
    for lot in pool:
        take = min(lot.remaining, need)
        lot.remaining -= take
        need -= take
        if not need:
            break
    return need

def _open_lots(events: Iterable[Event]) -> tuple[list[Lot], int]:
    """`lots` without their expiry dates, which only the lots left open need."""
    # A long history (a busy member: a thousand visits, hundreds of expiries) must stay linear:
    # a written-off lot is found by id, and spent lots are cut from the front of the list
    # rather than the list being rebuilt after every spend (the member page once took seconds).
    open_lots: list[Lot] = []
    by_id: dict[str, list[Lot]] = {}
    debt = 0
    for e in events:
        if e.stamps > 0:
            amount = e.stamps
            if debt:  # a positive event first pays back what an overdraft took
                paid = min(debt, amount)
                debt -= paid
                amount -= paid
            if amount:
                lot = Lot(e.id, e.at, None, amount)
                open_lots.append(lot)
                by_id.setdefault(e.id, []).append(lot)
        elif e.stamps < 0:
            debt += spend_lots(open_lots, by_id, e, -e.stamps)
            # Spent lots are at the front (oldest first); one written off elsewhere stays, empty,
            # until it reaches the front or the end.
            k = 0
            while k < len(open_lots) and not open_lots[k].remaining:
                k += 1
            if k:
                del open_lots[:k]
    return [lot for lot in open_lots if lot.remaining], debt


# A lot expires `months` after it was earned (add_months); whatever the day of the month or
# the zone, that is never sooner than this many days per month less a margin, so a lot earned
# later than now minus that span cannot have expired and its date need not be worked out.
_MIN_DAYS_PER_MONTH = 28
_MARGIN_DAYS = 4


def not_expired_after(t: dt.datetime, months: int) -> dt.datetime:
    """A lot earned after this moment cannot have expired by `t`; in UTC, the zone of stored
    events (times in one zone compare several times faster)."""
    return (t - dt.timedelta(days=_MIN_DAYS_PER_MONTH * months - _MARGIN_DAYS)).astimezone(dt.UTC)


def due_expiries(program: Program, events: Sequence[Event], now: dt.datetime) -> list[Lot]:
    """Lots whose stamps have expired by `now` and are not yet written off."""
    months = program.expiry.months
    if not months:
        return []
    too_recent = not_expired_after(now, months)
    if not any(e.stamps > 0 and e.at <= too_recent for e in events):
        return []
    open_lots, _ = _open_lots(events)
    due = []
    for lot in open_lots:
        if lot.earned_at <= too_recent:
            lot.expires_at = add_months(lot.earned_at, months)
            if lot.expires_at <= now:
                due.append(lot)
    return due


def expiry_event(member: str, lot: Lot) -> Event:
    """The event that writes off an expired lot; its id comes from the lot, so it is unique."""
    assert lot.expires_at is not None
    return Event(
        id=ev.derived_id("expire", member, lot.event_id),
        kind=ev.EXPIRED,
        at=lot.expires_at,
        member=member,
        stamps=-lot.remaining,
        ref=lot.event_id,
        body={"lot": lot.event_id},
    )


def balance(events: Iterable[Event]) -> int:
    """The balance: the sum of the stamps the events move."""
    return sum(e.stamps for e in events)


@dataclass(frozen=True)
class Visit:
    """A purchase that counts for tiers and missions; `local` is in the store's zone."""

    at: dt.datetime
    total: int
    skus: frozenset[str]
    local: dt.datetime


def visits(events: Iterable[Event], zone: dt.tzinfo = dt.UTC) -> list[Visit]:
    """The member's purchases: their own sales and the receipts they claimed."""
    out = []
    visit_kinds = _VISIT_KINDS
    for e in events:
        if e.kind in visit_kinds and "total" in e.body:
            memo = e.memo()
            v = memo.get(zone)
            if v is None:
                skus = frozenset(ln["sku"] for ln in e.body.get("lines", []) if ln.get("eligible", True))
                v = memo[zone] = Visit(e.at, int(e.body["total"]), skus, e.at.astimezone(zone))
            out.append(v)
    return out


_VISIT_KINDS = frozenset({ev.SALE, ev.CLAIMED})


def qualifying(program: Program, events: Sequence[Event], at: dt.datetime) -> int:
    """The tier measure (stamps earned or spend) in the rolling window ending at `at`."""
    return _qualifying(program, events, (at,))[0]


def _qualifying(program: Program, events: Sequence[Event], ends: tuple[dt.datetime, ...]) -> list[int]:
    """`qualifying` for several window ends in one pass over the events."""
    # Bounds in UTC, the zone of stored events: times in one zone compare without offsets.
    windows = [(add_months(at, -program.tiering.window_months).astimezone(dt.UTC), at.astimezone(dt.UTC))
               for at in ends]
    totals = [0] * len(ends)
    on_stamps = program.tiering.qualify_on == "stamps"
    for e in events:
        kind = e.kind
        # The kind first: most events do not count, and comparing zone-aware times costs more.
        if on_stamps:
            if not (kind in ev.EARNING_KINDS or kind == ev.REVERSED):
                continue
        elif not (kind in _VISIT_KINDS and "total" in e.body or kind == ev.REFUNDED):
            continue
        for i, (since, end) in enumerate(windows):
            if since < e.at <= end:
                if on_stamps:
                    totals[i] += e.stamps
                elif kind == ev.REFUNDED:
                    totals[i] -= int(e.body.get("amount", 0))
                else:
                    totals[i] += int(e.body["total"])
    return [max(t, 0) for t in totals]


def tier_for(program: Program, measure: int) -> Tier:
    """The highest tier whose threshold the measure reaches."""
    best = program.tiers[0]
    for t in program.tiers:
        if measure >= t.threshold:
            best = t
    return best


def tier_at(program: Program, events: Sequence[Event], at: dt.datetime) -> Tier:
    """The member's tier at `at`; with period-end downgrade a tier is kept to the year's end."""
    if program.tiering.downgrade == "immediate" or len(program.tiers) == 1:
        return tier_for(program, qualifying(program, events, at))
    local = at.astimezone(program.zone)
    year_start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    # Both measures in one pass; the year-start one is used only below the top tier.
    measure, at_year_start = _qualifying(program, events, (at, year_start))
    now_tier = tier_for(program, measure)
    if now_tier is program.tiers[-1]:
        return now_tier
    held = tier_for(program, at_year_start)
    return held if held.threshold > now_tier.threshold else now_tier


def period_key(mission: Mission, local: dt.datetime) -> str:
    """Which period a moment falls in for a mission (ISO week, month, year, or ever)."""
    if mission.period == "week":
        y, w, _ = local.isocalendar()
        return f"{y}-W{w:02d}"
    if mission.period == "month":
        return f"{local.year}-{local.month:02d}"
    if mission.period == "year":
        return str(local.year)
    return "ever"


def _period_of(period: str, local: dt.datetime) -> object:
    """`period_key` as a value that is cheaper to build and compare (equal iff the keys are)."""
    if period == "week":
        return local.isocalendar()[:2]
    if period == "month":
        return (local.year, local.month)
    if period == "year":
        return local.year
    return None


def mission_progress(
    program: Program, mission: Mission, events: Sequence[Event], at: dt.datetime, vs: list[Visit] | None = None
) -> tuple[int, str]:
    """Progress towards a mission in the period containing `at`, and that period's key."""
    zone = program.zone
    local = at.astimezone(zone)
    vs = visits(events, zone) if vs is None else vs
    at = at.astimezone(dt.UTC)  # the zone of stored events: times in one zone compare faster
    if mission.kind == "checkin_streak":
        days = sorted({v.local.date() for v in vs if v.at <= at})
        if not days or days[-1] != local.date():
            return 0, "none"
        start = days[-1]
        streak = 1
        for d in reversed(days[:-1]):
            if (start - d).days == 1:
                start, streak = d, streak + 1
            else:
                break
        return streak, f"streak-{start.isoformat()}"
    key = period_key(mission, local)
    period = mission.period
    this = _period_of(period, local)
    # The same test as comparing period keys, written so that it builds nothing per visit.
    if period == "week":  # an ISO week is the seven days from a Monday
        monday = local.toordinal() - local.weekday()
        in_period = [v for v in vs if v.at <= at and 0 <= v.local.toordinal() - monday < 7]
    elif period == "month":
        year, month = local.year, local.month
        in_period = [v for v in vs if v.at <= at and v.local.month == month and v.local.year == year]
    elif period == "year":
        in_period = [v for v in vs if v.at <= at and v.local.year == local.year]
    else:
        in_period = [v for v in vs if v.at <= at]
    if mission.kind == "visits_in_week":
        return len(in_period), key
    if mission.kind == "distinct_skus":
        return len(frozenset().union(*(v.skus for v in in_period))), key
    spent = sum(v.total for v in in_period)
    for e in events:
        if e.kind == ev.REFUNDED and e.at <= at and _period_of(period, e.at.astimezone(zone)) == this:
            spent -= int(e.body.get("amount", 0))
    return max(spent, 0), key


def mission_event_id(member: str, mission: Mission, key: str) -> str:
    """Deterministic id of a mission completion: two tills deriving it produce one event."""
    return _mission_event_id(member, mission.id, key)


@functools.lru_cache(maxsize=4096)
def _mission_event_id(member: str, mission_id: str, key: str) -> str:
    # A member's completed missions are looked up again at every sale of the period.
    return ev.derived_id("mission", member, mission_id, key)


def due_missions(program: Program, member: str, events: Sequence[Event], at: dt.datetime) -> list[Event]:
    """Mission completions earned by the events up to `at` and not yet recorded."""
    done = {e.id for e in events if e.kind == ev.MISSION}
    out = []
    vs = visits(events, program.zone)
    for m in program.missions:
        progress, key = mission_progress(program, m, events, at, vs)
        if progress < m.target or key == "none":
            continue
        eid = mission_event_id(member, m, key)
        if eid in done:
            continue
        out.append(
            Event(
                id=eid,
                kind=ev.MISSION,
                at=at,
                member=member,
                stamps=m.stamps,
                ref=m.id,
                body={"mission": m.id, "period": key, "badge": m.badge, "name": m.name},
            )
        )
    return out


@dataclass(frozen=True)
class MissionState:
    """A mission's progress in the current period, and whether it is done there."""

    id: str
    name: str
    progress: int
    target: int
    done: bool


@dataclass(frozen=True)
class MemberView:
    """Everything the till shows about a member at one moment."""

    balance: int
    tier: Tier
    next_tier: Tier | None
    to_next_tier: int
    measure: int
    card_filled: int
    card_size: int
    full_cards: int
    expiring: tuple[Expiring, ...]
    missions: tuple[MissionState, ...]
    badges: tuple[str, ...]
    visits: int
    last_visit: dt.datetime | None
    lifetime_earned: int
    due_expiry: int = 0
    extra: dict[str, object] = field(default_factory=dict)


def member_view(program: Program, member: str, events: Sequence[Event], now: dt.datetime) -> MemberView:
    """The member's state at `now` from their events, with expired stamps already written off."""
    due = due_expiries(program, events, now)
    written_off = [expiry_event(member, lot) for lot in due]
    all_events = list(events) + written_off
    bal = balance(all_events)
    open_lots, _ = lots(program, all_events)
    horizon = now + dt.timedelta(days=program.expiry.warn_days)
    expiring: dict[dt.datetime, int] = {}
    for lot in open_lots:
        if lot.expires_at is not None and lot.expires_at <= horizon:
            expiring[lot.expires_at] = expiring.get(lot.expires_at, 0) + lot.remaining
    missions = []
    done_ids = {e.id for e in all_events if e.kind == ev.MISSION}
    vs = visits(all_events, program.zone)
    for m in program.missions:
        progress, key = mission_progress(program, m, all_events, now, vs)
        done = key != "none" and mission_event_id(member, m, key) in done_ids
        missions.append(MissionState(m.id, m.name, min(progress, m.target), m.target, done))
    badges = []
    for e in all_events:
        badge = e.body.get("badge") if e.kind == ev.MISSION else None
        if badge and badge not in badges:
            badges.append(badge)
    return view_of(
        program,
        balance=bal,
        tier=tier_at(program, all_events, now),
        measure=qualifying(program, all_events, now),
        expiring=tuple(Expiring(s, at) for at, s in sorted(expiring.items())),
        missions=tuple(missions),
        badges=tuple(badges),
        visits=len(vs),
        last_visit=max((v.at for v in vs), default=None),
        lifetime_earned=sum(e.stamps for e in all_events if e.kind in ev.EARNING_KINDS),
        due_expiry=-sum(e.stamps for e in written_off),
    )


def view_of(program: Program, *, balance: int, tier: Tier, measure: int, expiring: tuple[Expiring, ...],
            missions: tuple[MissionState, ...], badges: tuple[str, ...], visits: int,
            last_visit: dt.datetime | None, lifetime_earned: int, due_expiry: int) -> MemberView:
    """A member view from what was found; the card and the next tier follow from the balance,
    the tier and the measure (the fold and the kept state both end here)."""
    higher = [t for t in program.tiers if t.threshold > tier.threshold]
    nxt = higher[0] if higher else None
    size = program.card.size
    return MemberView(
        balance=balance,
        tier=tier,
        next_tier=nxt,
        to_next_tier=max(nxt.threshold - measure, 0) if nxt else 0,
        measure=measure,
        card_filled=max(balance, 0) % size,
        card_size=size,
        full_cards=max(balance, 0) // size,
        expiring=expiring,
        missions=missions,
        badges=badges,
        visits=visits,
        last_visit=last_visit,
        lifetime_earned=lifetime_earned,
        due_expiry=due_expiry,
    )
