"""Kept tier window sums: batch after batch, in any order of times, the tier in the read model
is `projections.tier_at` over every event so far, and the kept sums equal a rebuild's."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, new_id
from tillstamp.loyalty.projections import tier_at

from .conftest import T0, Clock, program_source
from .test_crm_read_model import push, rows
from .test_hq_contract import enrol

STATE = "SELECT member, tier, tier_upto, tier_sum, tier_year_sum, tier_oldest, tier_key FROM crm_members ORDER BY member"

# (kind, stamps, member 0-2, days after T0, seconds): most within weeks (the sums move forward
# batch by batch), some a year or more apart (windows slide, years turn, late events arrive)
DAYS = st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(-400, 800))
EVENTS = st.lists(st.tuples(st.sampled_from([ev.EARNED, ev.REVERSED, ev.REDEEMED, ev.MISSION, ev.CLAIMED]),
                            st.integers(1, 40), st.integers(0, 2), DAYS, st.integers(0, 86399)),
                  min_size=1, max_size=40)
CUTS = st.lists(st.integers(1, 39), max_size=6)


def run(hq: Hq, spec: list[tuple[str, int, int, int, int]], cuts: list[int]) -> None:
    t = enrol(hq, "S1")
    members = [new_id() for _ in range(3)]
    events = [Event(new_id(), kind, T0 + dt.timedelta(days=day, seconds=sec), members[who],
                    -n if kind in (ev.REVERSED, ev.REDEEMED) else n, "x", {})
              for kind, n, who, day, sec in spec]
    program = hq.program()
    assert program is not None
    bounds = sorted({0, len(events), *(c for c in cuts if c < len(events))})
    seq = 1
    for a, b in itertools.pairwise(bounds):
        seq = push(hq, t, seq, events[a:b])
        for m in members:  # after every batch: the tier of everything so far
            mine = [e for e in events[:b] if e.member == m]
            counted = [e for e in mine if e.kind in ev.EARNING_KINDS | {ev.REVERSED}]
            want = tier_at(program, mine, max(e.at for e in counted)).id if counted else None
            got = rows(hq, "SELECT tier FROM crm_members WHERE member = ?", (m,))
            assert (got[0][0] if got else None) == want, (m, b)
    live = rows(hq, STATE)
    assert hq.store.verify_crm().ok
    assert hq.store.rebuild_crm().ok
    assert rows(hq, STATE) == live  # the sums kept batch by batch are the ones a rebuild takes


@settings(max_examples=60, deadline=None)
@given(spec=EVENTS, cuts=CUTS)
def test_kept_tier_sums_sqlite(spec: list[tuple[str, int, int, int, int]], cuts: list[int]) -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        run(hq, spec, cuts)
    finally:
        hq.store.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=EVENTS, cuts=CUTS)
def test_kept_tier_sums_postgresql(pg_server: Any, spec: list[tuple[str, int, int, int, int]],
                                   cuts: list[int]) -> None:
    hq = Hq(open_hq_store(str(pg_server.url())), clock=Clock())
    if hq.program() is None:
        hq.publish_program(program_source())
    try:
        run(hq, spec, cuts)
    finally:
        hq.store.close()


def test_a_new_program_recomputes_the_kept_sums() -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        t = enrol(hq, "S1")
        m = new_id()
        seq = push(hq, t, 1, [Event(new_id(), ev.EARNED, T0, m, 50, "x", {})])
        assert rows(hq, "SELECT tier, tier_sum FROM crm_members") == [("silver", 50)]
        src = program_source()
        src["tiers"][1]["threshold"] = 60  # silver now needs 60
        hq.publish_program(src)
        push(hq, t, seq, [Event(new_id(), ev.EARNED, T0 + dt.timedelta(hours=1), m, 5, "x", {})])
        key = rows(hq, "SELECT tier, tier_sum, tier_key FROM crm_members")[0]
        assert key[:2] == ("bronze", 55) and key[2] == "2"
    finally:
        hq.store.close()


def test_an_event_leaving_the_window_is_taken_out() -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        t = enrol(hq, "S1")
        m = new_id()
        at = [dt.datetime(2025, 3, 1, 5, tzinfo=dt.UTC), dt.datetime(2026, 1, 10, 5, tzinfo=dt.UTC)]
        seq = push(hq, t, 1, [Event(new_id(), ev.EARNED, at[0], m, 50, "x", {}),
                              Event(new_id(), ev.EARNED, at[1], m, 10, "x", {})])
        assert rows(hq, "SELECT tier_sum, tier_oldest FROM crm_members") == [(60, at[0].isoformat())]
        # June 2026: the window starts in June 2025, so March 2025's 50 stamps are out of it
        push(hq, t, seq, [Event(new_id(), ev.EARNED, dt.datetime(2026, 6, 1, 5, tzinfo=dt.UTC), m, 5, "x", {})])
        live = rows(hq, STATE)
        assert [r[3] for r in live] == [15]
        assert live[0][1] == "silver"  # held to the year's end on the 50 earned in 2025
        assert hq.store.rebuild_crm().ok and rows(hq, STATE) == live
    finally:
        hq.store.close()


def test_many_members_batch_after_batch(pg_server: Any) -> None:
    # Enough members for the bulk (unnest) writes on PostgreSQL, both the query and the step.
    hq = Hq(open_hq_store(str(pg_server.url())), clock=Clock())
    if hq.program() is None:
        hq.publish_program(program_source())
    try:
        t = enrol(hq, "S1")
        ms = [new_id() for _ in range(30)]
        seq = 1
        for day in range(3):
            seq = push(hq, t, seq, [Event(new_id(), ev.EARNED, T0 + dt.timedelta(days=day), m, i + 1, "x", {})
                                    for i, m in enumerate(ms)])
        cond = "member IN (" + ", ".join("?" * 30) + ")"
        got = rows(hq, f"SELECT member, tier, tier_sum FROM crm_members WHERE {cond} ORDER BY member", tuple(ms))
        want = sorted((m, "gold" if 3 * (i + 1) >= 80 else "silver" if 3 * (i + 1) >= 30 else "bronze",
                       3 * (i + 1)) for i, m in enumerate(ms))
        assert [(m, tier, int(n)) for m, tier, n in got] == want
        live = rows(hq, STATE)
        assert hq.store.rebuild_crm().ok and rows(hq, STATE) == live
    finally:
        hq.store.close()
