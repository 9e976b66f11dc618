"""A member's kept state answers exactly what the folds over the member's history answer.

The folds in `projections.py` are the reference: for generated histories (every kind of event
that moves stamps, counts for tiers or for missions; times in several zones around week and
month ends; events out of time order), a `MemberState` extended in chunks gives the same due
expiries, tier, missions (with the sale's own events pending), balance and member view (what a
receipt and the panel show), at any moment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.loyalty import events as ev
from tillstamp.loyalty import projections as pj
from tillstamp.loyalty.events import Event
from tillstamp.loyalty.kept import MemberState
from tillstamp.loyalty.program import Mission

M = "01M83FGF61CJSKM20CD6DSGCGP"
UTC = dt.UTC
zones = st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=7)), dt.timezone(dt.timedelta(hours=-5))])
BASE = dt.datetime(2026, 2, 27, 20, 0, tzinfo=UTC)  # near a month end and a week end
# Minutes from BASE: mostly within weeks of it (periods shared and split), some a year or more away.
offsets = st.integers(-60 * 24 * 12, 60 * 24 * 4) | st.integers(-60 * 24 * 800, 60 * 24 * 40)
KINDS = [ev.SALE, ev.CLAIMED, ev.EARNED, ev.REFUNDED, ev.REVERSED, ev.REDEEMED, ev.MISSION, ev.EXPIRED,
         ev.ADJUSTED, ev.ENROLLED]
items = st.lists(st.tuples(st.sampled_from(KINDS), offsets, zones, st.integers(0, 30),
                           st.sampled_from(["A", "B", "C", "D"]), st.booleans()), max_size=30)
missions = st.lists(st.builds(Mission, id=st.sampled_from(["m1", "m2", "m3"]), name=st.just("m"),
                              kind=st.sampled_from(["visits_in_week", "distinct_skus", "spend_target",
                                                    "checkin_streak"]),
                              target=st.integers(1, 4), stamps=st.integers(1, 5), badge=st.none(),
                              period=st.sampled_from(["week", "month", "year", "ever"])), max_size=4)


def history(generated) -> list[Event]:
    out: list[Event] = []
    for i, (kind, minutes, zone, n, sku, flag) in enumerate(generated):
        at = (BASE + dt.timedelta(minutes=minutes)).astimezone(zone)
        body: dict = {}
        stamps = 0
        if kind in (ev.SALE, ev.CLAIMED):
            lines = [{"sku": sku, "qty": 1, "price": 1000, "eligible": flag}, {"sku": "Z", "qty": 1, "price": 5}]
            body = {"total": n * 20_000, "lines": lines} if n or flag else {"token": "t"}
            stamps = n if kind == ev.CLAIMED else 0
        elif kind == ev.REFUNDED:
            body = {"amount": n * 5_000} if flag else {}
        elif kind in (ev.EARNED, ev.MISSION, ev.ADJUSTED):
            stamps = n if kind != ev.ADJUSTED or flag else -n
            if kind == ev.MISSION and flag:
                body = {"badge": f"badge-{sku}"}  # some repeated: a badge shows once
        elif kind == ev.EXPIRED:
            earned = [e for e in out if e.stamps > 0]
            body = {"lot": earned[n % len(earned)].id} if earned and flag else {"lot": None}
            stamps = -(n % 7)
        elif kind in (ev.REVERSED, ev.REDEEMED):
            stamps = -n
        out.append(Event(f"E{i:03d}", kind, at, M, stamps, None, body, i + 1))
    return out


def kept(program, events, cuts) -> MemberState:
    state = MemberState(program, M)
    for cut in [*sorted(c % (len(events) + 1) for c in cuts), len(events)]:
        assert state.follows(events)
        state.catch_up(events[:cut])
    assert state.events == events
    return state


def lots(found):
    return [(lot.event_id, lot.earned_at, lot.expires_at, lot.remaining) for lot in found]


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(generated=items, cuts=st.lists(st.integers(0, 40), max_size=3), when=offsets, zone=zones,
       months=st.integers(0, 13), on=st.sampled_from(["stamps", "spend"]),
       downgrade=st.sampled_from(["period_end", "immediate"]), window=st.integers(1, 14), ms=missions,
       pending_sale=st.booleans())
def test_kept_state_answers_what_the_folds_answer(program, generated, cuts, when, zone, months, on, downgrade,
                                                  window, ms, pending_sale):
    prog = dataclasses.replace(
        program, expiry=dataclasses.replace(program.expiry, months=months),
        tiering=dataclasses.replace(program.tiering, qualify_on=on, downgrade=downgrade, window_months=window),
        missions=tuple({m.id: m for m in ms}.values()))
    events = history(generated)
    state = kept(prog, events, cuts)
    at = (BASE + dt.timedelta(minutes=when)).astimezone(zone)
    assert state.balance == pj.balance(events)
    assert lots(state.due_expiries(at)) == lots(pj.due_expiries(prog, events, at))
    assert state.tier_at(at) == pj.tier_at(prog, events, at)
    assert state.view(at) == pj.member_view(prog, M, events, at)
    pending = []
    if pending_sale:  # the sale being recorded, as record_sale asks
        body = {"total": 60_000, "lines": [{"sku": "B", "qty": 2, "price": 30_000, "eligible": True}]}
        pending = [Event("P1", ev.SALE, at, M, 0, "k", body), Event("P2", ev.EARNED, at, M, 3, "k", {})]
    assert state.due_missions(at, pending) == pj.due_missions(prog, M, events + pending, at)
    # Asking changes nothing kept: the same answers again.
    assert state.due_missions(at, pending) == pj.due_missions(prog, M, events + pending, at)
    assert lots(state.due_expiries(at)) == lots(pj.due_expiries(prog, events, at))


@SETTINGS
@given(generated=items, at_minutes=offsets)
def test_missions_of_the_example_program_in_time_order(program, generated, at_minutes):
    """The usual till: each sale later than the last, every mission of the example program."""
    events = sorted(history(generated), key=lambda e: e.at)
    state = MemberState(program, M)
    for i, e in enumerate(events):
        state.extend([e])
        assert state.due_missions(e.at) == pj.due_missions(program, M, events[:i + 1], e.at)
        assert state.tier_at(e.at) == pj.tier_at(program, events[:i + 1], e.at)
        assert state.view(e.at) == pj.member_view(program, M, events[:i + 1], e.at)
    at = BASE + dt.timedelta(minutes=at_minutes)
    assert state.due_missions(at) == pj.due_missions(program, M, events, at)
    assert state.view(at) == pj.member_view(program, M, events, at)


def test_a_history_that_does_not_begin_with_the_kept_events_is_not_followed(program):
    events = history([(ev.EARNED, 0, UTC, 3, "A", True), (ev.SALE, 5, UTC, 2, "A", True)])
    state = MemberState(program, M)
    state.extend(events)
    assert state.follows(events) and state.follows([*events, events[0]])
    assert not state.follows(events[:1])  # an event rolled back
    assert not state.follows(list(reversed(events)))  # another order
    assert not state.follows([events[0], dataclasses.replace(events[1], stamps=9)])  # another event


def test_an_overdraft_is_paid_back_by_the_next_stamps_before_they_make_a_lot(program):
    day = dt.timedelta(days=1)
    t0 = BASE - 400 * day
    events = [Event("E1", ev.EARNED, t0, M, 5), Event("E2", ev.REDEEMED, t0 + day, M, -8),
              Event("E3", ev.EARNED, t0 + 2 * day, M, 10), Event("E4", ev.EARNED, t0 + 3 * day, M, 4)]
    state = MemberState(program, M)
    state.extend(events)
    assert lots(state.due_expiries(BASE)) == lots(pj.due_expiries(program, events, BASE))
    assert [lot.remaining for lot in state.due_expiries(BASE)] == [7, 4]


def test_the_tier_window_leaves_out_its_first_moment_and_counts_its_last(program):
    since = pj.add_months(BASE, -program.tiering.window_months)
    events = [Event("E1", ev.EARNED, since, M, 50), Event("E2", ev.EARNED, since + dt.timedelta(seconds=1), M, 30),
              Event("E3", ev.EARNED, BASE, M, 1), Event("E4", ev.EARNED, BASE + dt.timedelta(seconds=1), M, 100)]
    state = MemberState(program, M)
    state.extend(events)
    assert state._qualifying(BASE) == 31 == pj.qualifying(program, events, BASE)
