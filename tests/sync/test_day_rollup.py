"""The day rollup (`member_days`) segments read: kept at ingest, refunds and merges included,
equal to a plain grouping of the sale lines, checked by verify, built for older databases."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tillstamp.hq.readmodel import MERGED, days_from_lines
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.loyalty.events import Event, derived_id, new_id

from .conftest import T0, Clock, program_source
from .test_crm_read_model import ACTIONS, push, refund_event, rows, run_actions, sale_event
from .test_hq_contract import enrol


@pytest.fixture
def hq(hq_url: str) -> Iterator[Hq]:
    h = Hq(open_hq_store(hq_url), clock=Clock())
    h.publish_program(program_source())
    yield h
    h.store.close()


LINES = ("SELECT sale, line, member, store, terminal, receipt, at_utc, local_date, day, local_hour, weekday, "
         "sku, name, category, qty, amount, voided FROM sale_lines")


def naive_days(hq: Hq) -> list[tuple[Any, ...]]:
    """member_days as a plain count of the lines: distinct non-voided sales and their amounts."""
    groups: dict[tuple[str, int, str], tuple[set[str], int]] = {}
    for r in rows(hq, LINES):
        if r[2] is None or r[16]:
            continue
        sales, spend = groups.get((r[2], r[8], r[3]), (set(), 0))
        groups[(r[2], r[8], r[3])] = (sales | {r[0]}, spend + int(r[15]))
    return sorted((*k, len(s), a) for k, (s, a) in groups.items())


def held_days(hq: Hq) -> list[tuple[Any, ...]]:
    return [(m, int(d), s, int(v), int(a)) for m, d, s, v, a in
            rows(hq, "SELECT member, day, store, visits, spend FROM member_days ORDER BY member, day, store")]


def check(hq: Hq) -> None:
    got = held_days(hq)
    assert got == naive_days(hq)
    assert hq.store.verify_crm().ok


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_the_rollup_is_a_count_of_the_lines_sqlite(actions: list[tuple[str, int, int]]) -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        run_actions(hq, actions)
        check(hq)
    finally:
        hq.store.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_the_rollup_is_a_count_of_the_lines_postgresql(pg_server: Any, actions: list[tuple[str, int, int]]) -> None:
    hq = Hq(open_hq_store(str(pg_server.url())), clock=Clock())
    if hq.program() is None:
        hq.publish_program(program_source())
    try:
        run_actions(hq, actions)
        check(hq)
    finally:
        hq.store.close()


def test_a_void_and_a_merge_move_the_rollup(hq: Hq) -> None:
    t = enrol(hq, "S1")
    alias, survivor = new_id(), new_id()
    nxt = push(hq, t, 1, [sale_event("R1", alias, [("KOPI", 1, 20000, None)]),
                          sale_event("R2", survivor, [("ROTI", 2, 15000, None)]),
                          sale_event("R3", survivor, [("TEH", 1, 5000, None)])])
    assert sorted((r[0], *r[3:]) for r in held_days(hq)) == sorted([(alias, 1, 20000), (survivor, 2, 35000)])
    nxt = push(hq, t, nxt, [refund_event("R3", survivor, {"TEH": 1}, 5000)])  # R3 voided: one visit left
    assert [r[3:] for r in held_days(hq) if r[0] == survivor] == [(1, 30000)]
    merged = Event(derived_id("merge", alias, survivor), MERGED, T0, alias, 0, None, {"into": survivor})
    with hq.store._tx() as c:  # type: ignore[attr-defined]  # as HQ writes its own events
        hq.store._insert_hq_event(c, merged)  # type: ignore[attr-defined]
        hq.store._crm_after_ingest(c, [], [merged], [])  # type: ignore[attr-defined]
    assert [(r[0], *r[3:]) for r in held_days(hq)] == [(survivor, 2, 50000)]
    push(hq, t, nxt, [sale_event("R4", alias, [("TEH", 1, 5000, None)])])  # an offline till, later
    assert [(r[0], *r[3:]) for r in held_days(hq)] == [(survivor, 3, 55000)]
    check(hq)


def test_verify_finds_a_drifted_rollup_and_rebuild_repairs_it(hq: Hq) -> None:
    t = enrol(hq, "S1")
    m = new_id()
    push(hq, t, 1, [sale_event("R1", m, [("KOPI", 1, 20000, "COFFEE")])])
    with hq.store._tx() as c:  # type: ignore[attr-defined]
        hq.store._x(c, "UPDATE member_days SET visits = 7")  # type: ignore[attr-defined]
    report = hq.store.verify_crm()
    assert not report.ok and report.member_diffs == [] and report.line_diffs == []
    assert report.day_diffs[0]["member"] == m
    assert report.day_diffs[0]["columns"] == {"visits": {"live": 7, "rebuilt": 1}}
    assert report.to_dict()["day_diffs"] == report.day_diffs
    assert hq.store.rebuild_crm().ok
    assert held_days(hq)[0][3:] == (1, 20000)
    check(hq)


def test_days_from_lines_groups_like_the_sql() -> None:
    lines = [("A", 0, "m1", "S1", "T", "1", "", "", 10, 9, 0, "x", None, None, 1, 100, 0),
             ("A", 1, "m1", "S1", "T", "1", "", "", 10, 9, 0, "y", None, None, 1, 50, 0),
             ("B", 0, "m1", "S1", "T", "2", "", "", 10, 9, 0, "x", None, None, 1, 7, 0),
             ("C", 0, "m1", "S2", "T", "3", "", "", 10, 9, 0, "x", None, None, 1, 1, 0),
             ("D", 0, "m1", "S1", "T", "4", "", "", 11, 9, 0, "x", None, None, 1, 5, 1),  # voided
             ("E", 0, None, "S1", "T", "5", "", "", 10, 9, 0, "x", None, None, 1, 5, 0)]  # a guest
    assert days_from_lines(lines) == [("m1", 10, "S1", 2, 157), ("m1", 10, "S2", 1, 1)]


def test_an_older_database_gets_its_rollup(tmp_path: Path) -> None:
    path = tmp_path / "hq.db"
    hq = Hq(open_hq_store(f"sqlite:///{path}"), clock=Clock())
    hq.publish_program(program_source())
    t = enrol(hq, "S1")
    m = new_id()
    push(hq, t, 1, [sale_event("R1", m, [("KOPI", 2, 20000, None)]), sale_event("R2", None, [("TEH", 1, 1, None)])])
    want = held_days(hq)
    hq.store.close()
    with sqlite3.connect(path) as conn:  # the database as it was before the rollup's migration
        conn.execute("DROP TABLE member_days")
        conn.execute("DROP TABLE member_days_rebuild")
        conn.execute("DROP INDEX sale_lines_bought")
        for table in ("crm_members", "crm_members_rebuild"):
            for col in ("tier_upto", "tier_sum", "tier_year_sum", "tier_oldest", "tier_key"):
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm010_rollups'")
    hq = Hq(open_hq_store(f"sqlite:///{path}"), clock=Clock())
    try:
        assert want == held_days(hq) == [(m, want[0][1], "S1", 1, 40000)]
        check(hq)
    finally:
        hq.store.close()
