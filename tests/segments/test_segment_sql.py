"""The SQL compiler agrees with the reference evaluator, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import crmdata
from tillstamp.hq import segment_sql
from tillstamp.hq.segments import AsOf, evaluate, parse_segment
from tillstamp.hq.store import open_hq_store


@pytest.fixture
def store(hq_url: str) -> Any:
    s = open_hq_store(hq_url)
    yield s
    s.close()


def _sql(store: Any, data: dict[str, Any], asof: AsOf) -> set[str]:
    compiled = segment_sql.compile_segment(parse_segment(data).root, asof, segment_sql.dialect_of(store))
    return {r[0] for r in segment_sql.export_rows(store, compiled)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(facts=crmdata.facts(), defs=st.lists(crmdata.definitions(), min_size=1, max_size=6),
       shift=st.integers(-3, 3), zone=st.sampled_from(["Asia/Jakarta", "Asia/Jayapura", "UTC"]),
       card=st.integers(1, 12), months=st.sampled_from([0, 1, 6, 12]))
def test_sql_agrees_with_reference(store: Any, facts: Any, defs: list[dict[str, Any]], shift: int, zone: str,
                                   card: int, months: int) -> None:
    crmdata.clear(store)
    crmdata.load(store, facts)
    asof = AsOf(crmdata.BASE + dt.timedelta(days=shift), zone, card, months)
    for data in defs:
        expected = evaluate(parse_segment(data).root, facts, asof)
        assert _sql(store, data, asof) == expected, data


def test_every_leaf_selects_someone_somewhere(store: Any) -> None:
    """A hand-built case per leaf, so a leaf that always matches nothing cannot pass the property."""
    from tillstamp.hq.segments import Facts, LineFacts, MemberFacts, StampFacts

    d = crmdata.BASE_DAY
    asof = AsOf(crmdata.BASE, "Asia/Jakarta", 10, 6)
    facts = Facts(
        members=[MemberFacts("M1", "S1", d - 10, "2000-03-02", frozenset({"email"}), 9, "gold", ("b1",)),
                 MemberFacts("M2", "S2", d - 100, "2000-02-29", frozenset(), 3, "bronze", ()),
                 MemberFacts("M3", "S3", d + 1)],  # enrolled after as-of: never in a segment
        lines=[LineFacts("A1", "M1", "S1", d - 1, "A", "X", 1, 500, False),
               LineFacts("A2", "M1", "S1", d - 2, "A", "X", 2, 700, False),
               LineFacts("B1", "M2", "S2", d - 200, "C", "Y", 1, 100, False),
               LineFacts("B2", "M2", "S1", d - 3, "C", "Y", 1, 100, True),  # voided
               LineFacts("C1", "M3", "S3", d - 1, "A", "X", 1, 100, False),
               LineFacts("Z9", "M1", "S1", d, "C", "Y", 1, 999, False)],  # on as-of day: does not count
        stamps=[StampFacts("M2", 1, "2025-09-10T00:00:00+00:00", 5), StampFacts("M2", 2, "2026-01-01T00:00:00+00:00", -2)],
    )
    crmdata.load(store, facts)
    cases = {
        '{"last_visit_days": {"min": 1, "max": 1}}': {"M1"},
        '{"last_visit_days": {"min": 30}}': {"M2"},
        '{"visits": {"min": 2, "within_days": 2}}': {"M1"},
        '{"visits": {"max": 0, "within_days": 30}}': {"M2"},
        '{"spend": {"min": 1200}}': {"M1"},
        '{"bought": {"category": "Y"}}': {"M2"},
        '{"bought": {"sku": "A", "min_times": 2, "within_days": 2}}': {"M1"},
        '{"store": ["S1"]}': {"M1"},
        '{"tier": ["gold", "silver"]}': {"M1"},
        '{"balance": {"min": 5}}': {"M1"},
        '{"badge": "b1"}': {"M1"},
        '{"consent": "email"}': {"M1"},
        '{"birthday_within_days": 3}': {"M1", "M2"},  # 2026-02-28 keeps a 29 February birthday
        '{"birthday_this_month": true}': {"M1"},
        '{"enrolled_within_days": 30}': {"M1"},
        '{"stamps_expiring_within_days": 14}': {"M2"},  # earned 2025-09-10, expires 2026-03-10
        '{"stamps_to_full_card": {"max": 1}}': {"M1"},
        '{"rfm": ["potential_loyalist"]}': {"M1"},
        '{"rfm": ["lost", "hibernating"]}': {"M2"},
        '{"not": {"consent": "email"}}': {"M2"},
    }
    import json

    asof_0228 = AsOf(dt.date(2026, 2, 28), "Asia/Jakarta", 10, 6)
    for text, want in cases.items():
        data = json.loads(text)
        a = asof_0228 if "birthday_within" in text else asof
        assert _sql(store, data, a) == want, text
        assert evaluate(parse_segment(data).root, facts, a) == want, text


def test_values_are_bound_never_written_into_the_sql(store: Any) -> None:
    evil = "x'); DELETE FROM crm_members; --"
    data = {"any": [{"bought": {"sku": evil}}, {"bought": {"category": evil}}, {"store": [evil]},
                    {"tier": [evil, "gold"]}, {"badge": evil}, {"visits": {"min": 987654321}}]}
    crmdata.load(store, crmdata.Facts([crmdata.MemberFacts("M1", tier="gold")], []))
    for dialect in ("sqlite", "pg"):
        compiled = segment_sql.compile_segment(parse_segment(data).root, AsOf(crmdata.BASE), dialect)
        text = compiled.where
        assert "DELETE" not in text and "987654321" not in text and "gold" not in text and "x'" not in text
    assert _sql(store, data, AsOf(crmdata.BASE)) == {"M1"}  # the tier matched; nothing was deleted


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(facts=crmdata.facts(), data=crmdata.definitions(), sample=st.integers(0, 5))
def test_preview_counts_and_samples_the_first_members(store: Any, facts: Any, data: dict[str, Any],
                                                       sample: int) -> None:
    crmdata.clear(store)
    crmdata.load(store, facts)
    asof = AsOf(crmdata.BASE, "Asia/Jakarta", 10, 6)
    want = sorted(evaluate(parse_segment(data).root, facts, asof))
    compiled = segment_sql.compile_segment(parse_segment(data).root, asof, segment_sql.dialect_of(store))
    n, rows = segment_sql.count_and_sample(store, compiled, sample)
    assert n == len(want) and [r["member"] for r in rows] == want[:sample]


@st.composite
def _stamp_history(draw: Any) -> Any:
    """Few members, many stamp events: earnings, spends and late arrivals whose gseq order is not
    their time order, around the expiry window of a 1-, 6- or 12-month program."""
    from tillstamp.hq.segments import Facts, MemberFacts, StampFacts

    ids = [f"M{i}" for i in range(draw(st.integers(1, 4)))]
    base = dt.datetime.combine(crmdata.BASE, dt.time(), dt.UTC)
    stamps = []
    for g in range(draw(st.integers(0, 40))):
        at = base + dt.timedelta(hours=draw(st.integers(-24 * 400, 24 * 5)))
        stamps.append(StampFacts(draw(st.sampled_from(ids)), g + 1, at.isoformat(),
                                 draw(st.sampled_from([1, 1, 2, 3, 5, 10, -1, -3, -10]))))
    totals: dict[str, int] = {}
    for s in stamps:
        totals[s.member] = totals.get(s.member, 0) + s.stamps
    return Facts([MemberFacts(m, balance=totals.get(m, 0)) for m in ids], [], stamps)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(facts=_stamp_history(), days=st.integers(1, 60), shift=st.integers(-40, 3),
       months=st.sampled_from([1, 6, 12]), zone=st.sampled_from(["Asia/Jakarta", "UTC"]))
def test_stamps_expiring_agrees_with_the_lots(store: Any, facts: Any, days: int, shift: int, months: int,
                                              zone: str) -> None:
    """The expiring leaf's plan (kept balance less later stamps, the window's last lot, at most
    `balance` newer earnings) selects exactly the members the FIFO lots say, as of any D."""
    crmdata.clear(store)
    crmdata.load(store, facts)
    asof = AsOf(crmdata.BASE + dt.timedelta(days=shift), zone, 10, months)
    for data in ({"stamps_expiring_within_days": days}, {"not": {"stamps_expiring_within_days": days}}):
        assert _sql(store, data, asof) == evaluate(parse_segment(data).root, facts, asof), data


def test_stamps_expiring_counts_only_the_lots_still_open(store: Any) -> None:
    """A lot in the window is open only while the stamps earned after it fall short of the
    balance; a later-arriving event (smaller time, larger gseq) counts as newer."""
    from tillstamp.hq.segments import Facts, MemberFacts, StampFacts

    asof = AsOf(crmdata.BASE, "UTC", 10, 6)  # window: lots earned 2025-09-01 .. 2025-09-15
    old, win, late = "2025-06-01T00:00:00+00:00", "2025-09-05T00:00:00+00:00", "2026-01-01T00:00:00+00:00"
    after = "2026-03-02T00:00:00+00:00"  # after D: not counted
    stamps = [
        StampFacts("A", 1, win, 3), StampFacts("A", 2, late, 2),  # balance 5 > 2 newer: open
        StampFacts("B", 3, win, 3), StampFacts("B", 4, late, 2), StampFacts("B", 5, late, -3),  # 2 left, both newer
        StampFacts("C", 6, late, 2), StampFacts("C", 7, win, 1),  # the window's lot arrived last: newest
        StampFacts("D", 8, old, 4), StampFacts("D", 9, win, 1), StampFacts("D", 10, after, -5),  # spent after D
        StampFacts("E", 11, win, 2), StampFacts("E", 12, late, -2),  # its own spend took the window's lot
        # three newer lots of one stamp make up a balance of 3 exactly: the window's lot is spent
        StampFacts("F", 13, win, 2), *(StampFacts("F", g, late, 1) for g in (14, 15, 16)),
        StampFacts("F", 17, late, -2),
    ]
    totals: dict[str, int] = {}
    for s in stamps:
        totals[s.member] = totals.get(s.member, 0) + s.stamps
    facts = Facts([MemberFacts(m, balance=totals.get(m, 0)) for m in "ABCDEF"], [], stamps)
    crmdata.load(store, facts)
    data = {"stamps_expiring_within_days": 14}
    assert _sql(store, data, asof) == evaluate(parse_segment(data).root, facts, asof) == {"A", "C", "D"}
