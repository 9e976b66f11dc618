"""The read model's fold taken chunk by chunk (PostgreSQL folds each chunk in the thread that
decodes the next) means what the fold of the whole batch means, tier steps included, and the tier steps' date
shortcut agrees with the datetime arithmetic it replaces."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import random
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tillstamp.hq import readmodel as rm
from tillstamp.hq.store_readmodel import crm_pre
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.program import parse_program
from tillstamp.loyalty.projections import add_months

from .conftest import program_source

T0 = dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC)
MEMBERS = ["m0", "m1", "m2", None]
KINDS = [ev.EARNED, ev.REVERSED, ev.REDEEMED, ev.MISSION, ev.CLAIMED, ev.SALE, ev.REFUNDED, ev.ENROLLED,
         ev.CONSENT, rm.MERGED]


def body(kind: str, rnd: random.Random) -> dict[str, object]:
    """A body of the kind with the fields the fold reads."""
    if kind == ev.SALE:
        return {"receipt": f"r{rnd.randrange(5)}", "discount": rnd.choice([0, 500]),
                "lines": [{"sku": rnd.choice("AB"), "qty": rnd.randrange(0, 3), "price": 1000,
                           "category": rnd.choice([None, "C"])} for _ in range(rnd.randrange(0, 3))]}
    if kind == ev.REFUNDED:
        return {"lines": {rnd.choice("AB"): 1}}
    if kind in (ev.ENROLLED, ev.CONSENT):
        return {"consent": {rnd.choice(ev.CHANNELS): rnd.random() < 0.5}}
    if kind == ev.MISSION:
        return {"badge": rnd.choice(["b1", "b2"])}
    if kind == rm.MERGED:
        return {"into": rnd.choice(["m0", "m1"])}
    return {}


EVENTS = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(MEMBERS), st.integers(-5, 5),
                            st.integers(-400, 400), st.integers(0, 86399), st.integers(0, 10**6)),
                  min_size=0, max_size=30)


def facts(spec: list[tuple[str, str | None, int, int, int, int]]) -> list[tuple[object, ...]]:
    out = []
    for i, (kind, member, stamps, days, secs, seed) in enumerate(spec):
        at = (T0 + dt.timedelta(days=days, seconds=secs)).isoformat()
        out.append((f"e{i}", "T1", rnd_store(seed), i + 1, kind, member, at, stamps, f"S1/r{seed % 5}",
                    json.dumps(body(kind, random.Random(seed)))))
    return out


def rnd_store(seed: int) -> str:
    return ["S1", "S2"][seed % 2]


@settings(max_examples=300, deadline=None)
@given(spec=EVENTS, cuts=st.lists(st.integers(0, 30), max_size=4))
def test_the_fold_chunk_by_chunk_is_the_fold_of_the_batch(spec: list[tuple[str, str | None, int, int, int, int]],
                                                          cuts: list[int]) -> None:
    rows = facts(spec)
    prog = parse_program(program_source())
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    pre = None
    for a, b in itertools.pairwise(bounds):
        pre = crm_pre(pre, rows[a:b], (1, prog), b == len(rows))
    whole = rm.digest(rows, prog.timezone)
    if pre is None:
        assert not rows
        return
    assert pre.batch == whole
    assert pre.tier_events == rm.tier_events(rows)  # taken in the fold's own pass
    want = rm.tier_steps(rm.tier_events(rows), prog.zone, prog.tiering.window_months)
    assert pre.steps == want


def test_the_window_start_by_date_is_add_months_of_the_time() -> None:
    rnd = random.Random(7)
    for zone in ("Asia/Jakarta", "Asia/Jayapura", "America/St_Johns", "Pacific/Kiritimati", "Asia/Kathmandu"):
        z = ZoneInfo(zone)
        dates: dict[int, dict[str, str]] = {1: {}, 3: {}, 12: {}, 13: {}}  # one cache per window, as in use
        for _ in range(3000):
            t = dt.datetime(2023, 12, 25, tzinfo=dt.UTC) + dt.timedelta(
                days=rnd.choice([rnd.randrange(0, 900), 6, 7, 372, 737]), seconds=rnd.randrange(86400),
                microseconds=rnd.choice([0, rnd.randrange(1, 10**6)]))
            for months in (1, 3, 12, 13):
                want = (add_months(t, -months).isoformat(), t.astimezone(z).year)
                assert rm._window_start(t.isoformat(), z, months, dates[months]) == want, (t, zone, months)
    # a time not in HQ's stored form takes the datetime arithmetic
    assert rm._window_start("2026-03-31T01:00:00+07:00", ZoneInfo("UTC"), 1, {}) == ("2026-02-27T18:00:00+00:00", 2026)
