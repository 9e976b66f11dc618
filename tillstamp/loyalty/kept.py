"""A member's projections kept up to date event by event, for the till's sale path.

`projections.py` folds a member's whole history at every question; a busy till asks the same
member's expiry, tier and missions at every sale. `MemberState` applies each event once and
answers from what it kept: open lots, the stamps (or spend) that count for tiers in time order,
visits and refunds summed per mission period, visit days, completed missions, the balance.
It is always the fold of `events` (nothing else goes in), and every answer is tested equal to
the fold's over generated histories (tests/loyalty/test_kept.py); the folds stay the reference,
the rebuild, and the answer when a question falls outside what is kept (a sale dated before a
visit already counted, whose mission progress must leave later visits out).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence

from . import events as ev
from . import projections as pj
from .events import Event
from .program import Mission, Program, Tier

_VISIT_KINDS = frozenset({ev.SALE, ev.CLAIMED})


class _Periods:
    """Visits and refunds summed per mission period (one dict per period kind in use)."""

    def __init__(self, periods: frozenset[str]):
        self.periods = periods
        self.visits: dict[str, dict[object, int]] = {p: {} for p in periods}
        self.skus: dict[str, dict[object, set[str]]] = {p: {} for p in periods}
        self.spend: dict[str, dict[object, int]] = {p: {} for p in periods}
        self.days: set[dt.date] = set()

    def add_visit(self, v: pj.Visit) -> None:
        self.days.add(v.local.date())
        for period in self.periods:
            key = pj._period_of(period, v.local)
            self.visits[period][key] = self.visits[period].get(key, 0) + 1
            self.skus[period].setdefault(key, set()).update(v.skus)
            self.spend[period][key] = self.spend[period].get(key, 0) + v.total

    def add_refund(self, local: dt.datetime, amount: int) -> None:
        for period in self.periods:
            key = pj._period_of(period, local)
            self.spend[period][key] = self.spend[period].get(key, 0) - amount


class MemberState:
    """The fold of a member's events, kept: apply events in ledger order with `extend`."""

    def __init__(self, program: Program, member: str):
        self.program = program
        self.member = member
        self.events: list[Event] = []
        self.balance = 0
        self._zone = program.zone
        # Lots, as projections._open_lots keeps them.
        self._lots: list[pj.Lot] = []
        self._lots_by_id: dict[str, list[pj.Lot]] = {}
        self._debt = 0
        self._first_earned: dt.datetime | None = None  # the earliest positive event
        # What counts for tiers, in time order (UTC), with the amount each counts.
        self._tier_at: list[dt.datetime] = []
        self._tier_amount: list[int] = []
        self._on_stamps = program.tiering.qualify_on == "stamps"
        # Missions: sums per period, every visit day, the latest visit or refund, completions.
        self._periods = _Periods(frozenset(m.period for m in program.missions if m.kind != "checkin_streak"))
        self._latest: dt.datetime | None = None
        self._done: set[str] = set()
        # What the member view adds: visits, the last one, stamps ever earned, badges in order.
        self._visits = 0
        self._last_visit: dt.datetime | None = None
        self._earned = 0
        self._badges: list[str] = []

    def follows(self, history: Sequence[Event]) -> bool:
        """True when `history` begins with the events applied so far (then `extend` may go on)."""
        n = len(self.events)
        # Mostly the very same objects (the store's memory of the member), compared by identity.
        return len(history) >= n and list(history[:n]) == self.events

    def extend(self, events: Sequence[Event]) -> None:
        """Apply events that follow the ones applied so far, in order."""
        for e in events:
            self._apply(e)

    def catch_up(self, history: Sequence[Event]) -> None:
        """Apply the events of `history` after those applied so far (`follows(history)` holds)."""
        self.extend(history[len(self.events):])

    def _apply(self, e: Event) -> None:
        self.events.append(e)
        stamps = e.stamps
        self.balance += stamps
        kind = e.kind
        if stamps:
            self._lot(e)
            if kind in ev.EARNING_KINDS:
                self._earned += stamps
        at = e.at.astimezone(dt.UTC)
        if self._on_stamps and (kind in ev.EARNING_KINDS or kind == ev.REVERSED):
            self._tier(at, stamps)
        if kind in _VISIT_KINDS and "total" in e.body:
            (v,) = pj.visits((e,), self._zone)
            self._periods.add_visit(v)
            if not self._on_stamps:
                self._tier(at, v.total)
            self._later(at)
            self._visits += 1
            if self._last_visit is None or e.at > self._last_visit:
                self._last_visit = e.at
        elif kind == ev.REFUNDED:
            amount = int(e.body.get("amount", 0))
            self._periods.add_refund(e.at.astimezone(self._zone), amount)
            if not self._on_stamps:
                self._tier(at, -amount)
            self._later(at)
        elif kind == ev.MISSION:
            self._done.add(e.id)
            badge = e.body.get("badge")
            if badge and badge not in self._badges:
                self._badges.append(badge)

    def _later(self, at: dt.datetime) -> None:
        if self._latest is None or at > self._latest:
            self._latest = at

    def _tier(self, at: dt.datetime, amount: int) -> None:
        i = bisect.bisect_right(self._tier_at, at)
        self._tier_at.insert(i, at)
        self._tier_amount.insert(i, amount)

    def _lot(self, e: Event) -> None:
        """One step of projections._open_lots."""
        open_lots = self._lots
        if e.stamps > 0:
            if self._first_earned is None or e.at < self._first_earned:
                self._first_earned = e.at
            amount = e.stamps
            if self._debt:
                paid = min(self._debt, amount)
                self._debt -= paid
                amount -= paid
            if amount:
                lot = pj.Lot(e.id, e.at, None, amount)
                open_lots.append(lot)
                self._lots_by_id.setdefault(e.id, []).append(lot)
            return
        self._debt += pj.spend_lots(open_lots, self._lots_by_id, e, -e.stamps)
        k = 0
        while k < len(open_lots) and not open_lots[k].remaining:
            k += 1
        if k:
            del open_lots[:k]

    # -- answers ---------------------------------------------------------------------------

    def due_expiries(self, now: dt.datetime) -> list[pj.Lot]:
        """`projections.due_expiries` of the events (new Lot objects: the kept ones stay)."""
        months = self.program.expiry.months
        if not months or self._first_earned is None:
            return []
        too_recent = pj.not_expired_after(now, months)
        if self._first_earned > too_recent:
            return []
        due = []
        for lot in self._lots:
            if lot.remaining and lot.earned_at <= too_recent:
                expires = pj.add_months(lot.earned_at, months)
                if expires <= now:
                    due.append(pj.Lot(lot.event_id, lot.earned_at, expires, lot.remaining))
        return due

    def _qualifying(self, at: dt.datetime) -> int:
        since = pj.add_months(at, -self.program.tiering.window_months).astimezone(dt.UTC)
        lo = bisect.bisect_right(self._tier_at, since)
        hi = bisect.bisect_right(self._tier_at, at.astimezone(dt.UTC))
        return max(sum(self._tier_amount[lo:hi]), 0) if hi > lo else 0

    def tier_at(self, at: dt.datetime) -> Tier:
        """`projections.tier_at` of the events."""
        program = self.program
        if program.tiering.downgrade == "immediate" or len(program.tiers) == 1:
            return pj.tier_for(program, self._qualifying(at))
        now_tier = pj.tier_for(program, self._qualifying(at))
        if now_tier is program.tiers[-1]:
            return now_tier
        local = at.astimezone(program.zone)
        year_start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        held = pj.tier_for(program, self._qualifying(year_start))
        return held if held.threshold > now_tier.threshold else now_tier

    def view(self, now: dt.datetime) -> pj.MemberView:
        """`projections.member_view` of the events at `now` (what a receipt and the panel show)."""
        program = self.program
        if self._latest is not None and self._latest > now:
            # A visit or refund after `now` must be left out of the mission counts, which hold them all.
            return pj.member_view(program, self.member, self.events, now)
        due = self.due_expiries(now)
        written_off = sum(lot.remaining for lot in due)
        local = now.astimezone(self._zone)
        missions = []
        for m in program.missions:
            if m.kind == "checkin_streak":
                progress, key = self._streak(local.date(), set())
            else:
                progress, key = self._in_period(m, local, [], []), pj.period_key(m, local)
            done = key != "none" and pj.mission_event_id(self.member, m, key) in self._done
            missions.append(pj.MissionState(m.id, m.name, min(progress, m.target), m.target, done))
        return pj.view_of(
            program,
            balance=self.balance - written_off,
            tier=self.tier_at(now),
            measure=self._qualifying(now),
            expiring=self._expiring(due, now + dt.timedelta(days=program.expiry.warn_days)),
            missions=tuple(missions),
            badges=tuple(self._badges),
            visits=self._visits,
            last_visit=self._last_visit,
            lifetime_earned=self._earned,
            due_expiry=written_off,
        )

    def _expiring(self, due: list[pj.Lot], horizon: dt.datetime) -> tuple[pj.Expiring, ...]:
        """The open lots' stamps expiring by `horizon` once the `due` lots are written off, as
        `projections.lots` finds them after the write-off events (on copies: the kept lots stay)."""
        months = self.program.expiry.months
        if not months:
            return ()
        open_lots = self._lots
        if due:
            open_lots = [pj.Lot(lot.event_id, lot.earned_at, None, lot.remaining) for lot in open_lots]
            by_id: dict[str, list[pj.Lot]] = {}
            for lot in open_lots:
                by_id.setdefault(lot.event_id, []).append(lot)
            for lot in due:
                pj.spend_lots(open_lots, by_id, pj.expiry_event(self.member, lot), lot.remaining)
        # A regular's hundreds of recent open lots are not each given a date.
        too_recent = pj.not_expired_after(horizon, months)
        expiring: dict[dt.datetime, int] = {}
        for lot in open_lots:
            if lot.remaining and lot.earned_at <= too_recent:
                expires = pj.add_months(lot.earned_at, months)
                if expires <= horizon:
                    expiring[expires] = expiring.get(expires, 0) + lot.remaining
        return tuple(pj.Expiring(s, at) for at, s in sorted(expiring.items()))

    def due_missions(self, at: dt.datetime, pending: Sequence[Event] = ()) -> list[Event]:
        """`projections.due_missions` of the events followed by `pending` (not applied)."""
        program = self.program
        if not program.missions:
            return []
        zone = self._zone
        latest = self._latest
        done = self._done
        visits: list[pj.Visit] = []  # the pending ones (usually the sale being recorded)
        refunds: list[tuple[dt.datetime, int]] = []
        for e in pending:
            kind = e.kind
            if kind in _VISIT_KINDS and "total" in e.body:
                (v,) = pj.visits((e,), zone)
                visits.append(v)
            elif kind == ev.REFUNDED:
                refunds.append((e.at.astimezone(zone), int(e.body.get("amount", 0))))
            else:
                if kind == ev.MISSION:
                    done = done | {e.id}
                continue
            t = e.at.astimezone(dt.UTC)
            latest = t if latest is None or t > latest else latest
        if latest is not None and latest > at:
                # A visit or refund after `at` must be left out of the counts, which hold them all.
            return pj.due_missions(program, self.member, [*self.events, *pending], at)
        local = at.astimezone(zone)
        out = []
        for m in program.missions:
            if m.kind == "checkin_streak":
                progress, name = self._streak(local.date(), {v.local.date() for v in visits})
                if name == "none":
                    continue
            else:
                progress = self._in_period(m, local, visits, refunds)
                name = ""
            if progress < m.target:
                continue
            name = name or pj.period_key(m, local)
            eid = pj.mission_event_id(self.member, m, name)
            if eid in done:
                continue
            out.append(Event(id=eid, kind=ev.MISSION, at=at, member=self.member, stamps=m.stamps, ref=m.id,
                             body={"mission": m.id, "period": name, "badge": m.badge, "name": m.name}))
        return out

    def _streak(self, day: dt.date, more: set[dt.date]) -> tuple[int, str]:
        days = self._periods.days
        if day not in days and day not in more:
            return 0, "none"
        streak, start = 1, day
        one = dt.timedelta(days=1)
        while (start - one) in days or (start - one) in more:
            start -= one
            streak += 1
        return streak, f"streak-{start.isoformat()}"

    def _in_period(self, m: Mission, local: dt.datetime, visits: list[pj.Visit],
                   refunds: list[tuple[dt.datetime, int]]) -> int:
        period = m.period
        key = pj._period_of(period, local)
        kept = self._periods
        mine = [v for v in visits if pj._period_of(period, v.local) == key] if visits else visits
        if m.kind == "visits_in_week":
            return kept.visits[period].get(key, 0) + len(mine)
        if m.kind == "distinct_skus":
            skus = kept.skus[period].get(key, set())
            return len(skus.union(*(v.skus for v in mine))) if mine else len(skus)
        spent = kept.spend[period].get(key, 0) + sum(v.total for v in mine)
        spent -= sum(amount for t, amount in refunds if pj._period_of(period, t) == key)
        return max(spent, 0)
