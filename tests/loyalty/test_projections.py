"""Projections: expiry oldest-first, tiers with period-end downgrade, missions, badges."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import JAKARTA

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event
from tillstamp.loyalty.projections import (
    add_months,
    due_expiries,
    due_missions,
    expiry_event,
    member_view,
    not_expired_after,
    tier_at,
)

M = "01M83FGF61CJSKM20CD6DSGCGP"
T0 = dt.datetime(2025, 1, 10, 9, 0, tzinfo=JAKARTA)


def earned(n: int, at: dt.datetime, i: int = 0) -> Event:
    return Event(f"E{i}-{at.isoformat()}", ev.EARNED, at, M, n, "k")


def visit(at: dt.datetime, total=30000, skus=("LATTE",), i=0) -> Event:
    lines = [{"sku": s, "qty": 1, "price": total, "eligible": True} for s in skus]
    return Event(f"S{i}-{at.isoformat()}", ev.SALE, at, M, 0, f"k{i}", {"total": total, "lines": lines})


@settings(max_examples=500, deadline=None)
@given(earned_at=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1),
                              timezones=st.sampled_from([dt.UTC, JAKARTA, dt.timezone(dt.timedelta(hours=-11))])),
       months=st.integers(1, 36), slack=st.integers(-60 * 24 * 10, 60 * 24 * 10))
def test_a_lot_earned_after_the_bound_has_not_expired(earned_at, months, slack):
    # The fold and the kept state skip lots earned after `not_expired_after(t, months)` without
    # working out their date: none of them may have expired by t (t drawn around the expiry).
    t = add_months(earned_at, months) + dt.timedelta(minutes=slack)
    if earned_at > not_expired_after(t, months):
        assert add_months(earned_at, months) > t


def test_add_months_clamps_to_month_end():
    assert add_months(dt.datetime(2026, 1, 31, tzinfo=dt.UTC), 1).day == 28
    assert add_months(dt.datetime(2026, 11, 30, tzinfo=dt.UTC), 3) == dt.datetime(2027, 2, 28, tzinfo=dt.UTC)
    assert add_months(dt.datetime(2026, 3, 15, tzinfo=dt.UTC), -12) == dt.datetime(2025, 3, 15, tzinfo=dt.UTC)


def test_oldest_stamps_are_spent_first_and_the_rest_expire(program):
    events = [
        earned(5, T0, 1),
        earned(4, T0 + dt.timedelta(days=60), 2),
        Event("R", ev.REDEEMED, T0 + dt.timedelta(days=90), M, -6, "pastry-gratis"),
    ]
    # 6 spent: all 5 of the first lot and 1 of the second, so nothing of the first lot is left.
    now = T0 + dt.timedelta(days=366)
    assert due_expiries(program, events, now) == []
    later = T0 + dt.timedelta(days=60 + 366)
    due = due_expiries(program, events, later)
    assert [lot.remaining for lot in due] == [3]
    view = member_view(program, M, events, later)
    assert view.balance == 0 and view.due_expiry == 3
    # Writing the expiry off as an event gives the same view; its id comes from the lot.
    off = expiry_event(M, due[0])
    assert off.stamps == -3 and off.id == expiry_event(M, due[0]).id
    assert member_view(program, M, events + [off], later).balance == 0


def test_expiring_soon_is_reported(program):
    events = [earned(7, T0, 1)]
    view = member_view(program, M, events, add_months(T0, 12) - dt.timedelta(days=10))
    assert [(x.stamps, x.at) for x in view.expiring] == [(7, add_months(T0, 12))]


def test_tier_rises_with_stamps_and_drops_only_at_period_end(program):
    events = [earned(35, dt.datetime(2025, 3, 1, tzinfo=JAKARTA), 1)]
    assert tier_at(program, events, dt.datetime(2025, 3, 2, tzinfo=JAKARTA)).id == "silver"
    # March 2026: the stamps left the 12-month window, but the tier held at the start of
    # 2026 (qualified over 2025) is kept until the end of 2026.
    assert tier_at(program, events, dt.datetime(2026, 6, 1, tzinfo=JAKARTA)).id == "silver"
    assert tier_at(program, events, dt.datetime(2027, 1, 2, tzinfo=JAKARTA)).id == "bronze"


def test_progress_to_next_tier(program):
    view = member_view(program, M, [earned(12, T0, 1)], T0 + dt.timedelta(days=1))
    assert (view.tier.id, view.next_tier.id, view.to_next_tier) == ("bronze", "silver", 18)
    assert (view.card_filled, view.full_cards) == (2, 1)


def test_missions_each_kind(program):
    mon = dt.datetime(2026, 11, 23, 9, 0, tzinfo=JAKARTA)
    week = [visit(mon + dt.timedelta(days=d), i=d) for d in range(3)]
    done = {e.body["mission"] for e in due_missions(program, M, week, week[-1].at)}
    assert "rajin-ngopi" in done
    # Sunday of the same ISO week and the next Monday are different weeks.
    split = [visit(mon + dt.timedelta(days=6), i=1), visit(mon + dt.timedelta(days=7), i=2)]
    assert not due_missions(program, M, split, split[-1].at)
    skus = [visit(mon, skus=("A", "B", "C"), i=1), visit(mon, skus=("C", "D", "E"), i=2)]
    assert "penjelajah-rasa" in {e.body["mission"] for e in due_missions(program, M, skus, mon)}
    big = [visit(mon, total=300000, i=1), visit(mon + dt.timedelta(days=2), total=200000, i=2)]
    assert "sultan-bulanan" in {e.body["mission"] for e in due_missions(program, M, big, big[-1].at)}
    streak = [visit(mon + dt.timedelta(days=d), i=d) for d in range(5)]
    assert "ngopi-tiap-hari" in {e.body["mission"] for e in due_missions(program, M, streak, streak[-1].at)}
    broken = [visit(mon + dt.timedelta(days=d), i=d) for d in (0, 1, 2, 4, 5)]
    assert "ngopi-tiap-hari" not in {e.body["mission"] for e in due_missions(program, M, broken, broken[-1].at)}


def test_a_mission_completes_once_per_period_and_gives_a_badge(program):
    mon = dt.datetime(2026, 11, 23, 9, 0, tzinfo=JAKARTA)
    week = [visit(mon + dt.timedelta(hours=h), i=h) for h in range(3)]
    first = due_missions(program, M, week, week[-1].at)
    more = week + first + [visit(mon + dt.timedelta(days=1), i=9)]
    assert not [e for e in due_missions(program, M, more, mon + dt.timedelta(days=1)) if e.body["mission"] == "rajin-ngopi"]
    view = member_view(program, M, more, mon + dt.timedelta(days=1))
    assert "Rajin Ngopi" in view.badges
    assert next(m for m in view.missions if m.id == "rajin-ngopi").done


def _lots_reference(program, events):
    """The plain form of `lots` (rebuild the list after every spend), to compare the fast one with."""
    from tillstamp.loyalty.projections import Lot

    open_lots, debt, months = [], 0, program.expiry.months
    for e in events:
        if e.stamps > 0:
            amount = e.stamps
            paid = min(debt, amount)
            debt, amount = debt - paid, amount - paid
            if amount:
                open_lots.append(Lot(e.id, e.at, add_months(e.at, months) if months else None, amount))
        elif e.stamps < 0:
            need = -e.stamps
            if e.kind == ev.EXPIRED:
                target = [lot for lot in open_lots if lot.event_id == e.body.get("lot")]
                pool = target + [lot for lot in open_lots if all(lot is not t for t in target)]
            else:
                pool = open_lots
            for lot in pool:
                take = min(lot.remaining, need)
                lot.remaining -= take
                need -= take
                if not need:
                    break
            debt += need
            open_lots = [lot for lot in open_lots if lot.remaining]
    return open_lots, debt


SPENDS = st.lists(st.tuples(st.sampled_from(["earn", "earn", "redeem", "expire", "adjust"]), st.integers(1, 9),
                            st.integers(0, 40)), max_size=60)


@given(SPENDS)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_open_lots_are_those_of_the_plain_computation(program, spec):
    from tillstamp.loyalty.projections import lots

    events, earned_ids = [], []
    for i, (kind, n, pick) in enumerate(spec):
        at = T0 + dt.timedelta(days=i)
        if kind == "earn":
            events.append(earned(n, at, i))
            earned_ids.append(events[-1].id)
        elif kind == "expire":  # writes off a lot (maybe one already spent, or an unknown one)
            lot = earned_ids[pick % len(earned_ids)] if earned_ids and pick < 35 else "nope"
            events.append(Event(f"X{i}", ev.EXPIRED, at, M, -n, None, {"lot": lot}))
        else:
            events.append(Event(f"R{i}", ev.REDEEMED if kind == "redeem" else ev.ADJUSTED, at, M, -n, None, {}))
    fast, fast_debt = lots(program, events)
    slow, slow_debt = _lots_reference(program, events)
    assert fast_debt == slow_debt
    assert [(x.event_id, x.remaining, x.expires_at) for x in fast] == [(x.event_id, x.remaining, x.expires_at)
                                                                       for x in slow]
