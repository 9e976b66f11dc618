"""The CRM read model at HQ (crm_members, sale_lines): kept at ingest, equal to a rebuild,
on every backend."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.hq.readmodel import MERGED, epoch_day
from tillstamp.hq.record import MemberNotFound, MemberRef, member_record
from tillstamp.hq.service import Hq
from tillstamp.hq.store import TerminalRow, open_hq_store
from tillstamp.hq.store_readmodel import event_tuple
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, derived_id, new_id
from tillstamp.sync import protocol as p

from .conftest import T0, Clock, program_source
from .test_hq_contract import batch, enrol


@pytest.fixture
def hq(hq_url: str) -> Iterator[Hq]:
    h = Hq(open_hq_store(hq_url), clock=Clock())
    h.publish_program(program_source())
    yield h
    h.store.close()


def rows(hq: Hq, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with hq.store._tx(write=False) as c:  # type: ignore[attr-defined]
        return list(hq.store._x(c, sql, params).fetchall())  # type: ignore[attr-defined]


def member_row(hq: Hq, member: str) -> dict[str, Any]:
    got = hq.store.crm_member(member=member)
    assert got is not None
    return got


def sale_event(receipt: str, member: str | None, lines: list[tuple[str, int, int, str | None]], at: dt.datetime = T0,
               discount: int = 0, store: str = "S1") -> Event:
    body_lines = [{"sku": s, "name": s.title(), "qty": q, "price": pr, **({"category": c} if c else {})}
                  for s, q, pr, c in lines]
    total = sum(q * pr for _, q, pr, _ in lines) - discount
    body: dict[str, Any] = {"receipt": receipt, "total": total, "lines": body_lines, "zone": "Asia/Jakarta"}
    if discount:
        body["discount"] = discount
    return Event(new_id(), ev.SALE, at, member, 0, f"{store}/{receipt}", body)


def refund_event(receipt: str, member: str | None, lines: dict[str, int], amount: int, store: str = "S1") -> Event:
    return Event(new_id(), ev.REFUNDED, T0 + dt.timedelta(hours=1), member, 0, f"{store}/{receipt}",
                 {"receipt": receipt, "amount": amount, "lines": lines, "wanted": 0, "uncollected": 0})


def push(hq: Hq, t: TerminalRow, start: int, events: list[Event], members: list[dict[str, Any]] | None = None) -> int:
    req = batch(t, start, events)
    if members:
        req = req.model_copy(update={"members": [p.WireMember(**m) for m in members]})
    hq.push(t, req)
    return start + len(events)


def test_ingest_keeps_lines_figures_consent_and_badges(hq: Hq) -> None:
    t = enrol(hq, "S1")
    m = new_id()
    enrolled = Event(new_id(), ev.ENROLLED, T0, m, 0, None,
                     {"consent": {"whatsapp": True, "email": False, "sms": False}, "via": "till"})
    s1 = sale_event("R1", m, [("KOPI", 2, 20000, "COFFEE"), ("ROTI", 1, 15000, "BAKERY")], discount=5000)
    s2 = sale_event("R2", m, [("KOPI", 1, 20000, "COFFEE")], at=T0 + dt.timedelta(days=2, hours=10))
    guest = sale_event("R3", None, [("TEH", 1, 10000, None)])
    earned = Event(new_id(), ev.EARNED, T0, m, 5, "S1/R1", {})
    mission = Event(new_id(), ev.MISSION, T0, m, 2, "rajin", {"mission": "rajin", "badge": "rajin-ngopi"})
    nxt = push(hq, t, 1, [enrolled, s1, earned, mission, s2, guest],
               [{"id": m, "phone": "+6281234567890", "name": "Dewi", "email": "dewi@example.id"}])
    lines = rows(hq, "SELECT sale, line, member, receipt, local_date, day, local_hour, weekday, sku, qty, amount, "
                     "voided FROM sale_lines ORDER BY receipt, line")
    jkt = T0.astimezone(dt.timezone(dt.timedelta(hours=7)))
    assert [(r[3], r[8], r[9], r[10]) for r in lines] == [
        ("R1", "KOPI", 2, 40000 - 3637), ("R1", "ROTI", 1, 15000 - 1363), ("R2", "KOPI", 1, 20000),
        ("R3", "TEH", 1, 10000)]  # the discount shared 40000:15000, remainder to the first line
    assert sum(r[10] for r in lines[:2]) == s1.body["total"]
    assert lines[0][4] == jkt.date().isoformat() and lines[0][5] == epoch_day(jkt.date())
    assert lines[0][6] == 10 and lines[0][7] == 0  # 10:00 on a Monday in Jakarta
    assert lines[2][6] == 20 and lines[3][2] is None  # 03:00 UTC + 2 days 10 h = 20:00 local; a guest's line
    row = member_row(hq, m)
    assert (row["phone"], row["name"], row["store"]) == ("+6281234567890", "Dewi", "S1")
    assert (row["consent_whatsapp"], row["consent_email"], row["consent_sms"]) == (1, 0, 0)
    assert (row["visits"], row["spend"], row["balance"]) == (2, 70000, 7)
    assert json.loads(row["badges"]) == ["rajin-ngopi"]
    assert row["fav_category"] == "COFFEE" and row["fav_store"] == "S1" and row["usual_weekday"] == 0
    assert row["first_day"] == epoch_day(jkt.date()) and row["last_day"] == row["first_day"] + 2
    assert row["tier"] == "bronze" and row["enrolled_at"] == T0.isoformat()

    # A partial refund nets the line; refunding the rest voids the sale and it stops counting.
    consent = Event(new_id(), ev.CONSENT, T0, m, 0, None, {"channel": "email", "granted": True})
    nxt = push(hq, t, nxt, [refund_event("R1", m, {"KOPI": 1}, 18000), consent])
    assert rows(hq, "SELECT qty, amount, voided FROM sale_lines WHERE receipt = 'R1' ORDER BY line") == [
        (1, 18181, 0), (1, 13637, 0)]
    row = member_row(hq, m)
    assert (row["visits"], row["spend"], row["consent_email"]) == (2, 18181 + 13637 + 20000, 1)
    push(hq, t, nxt, [refund_event("R1", m, {"KOPI": 1, "ROTI": 1}, 31818)])
    assert rows(hq, "SELECT qty, amount, voided FROM sale_lines WHERE receipt = 'R1' ORDER BY line") == [
        (0, 0, 1), (0, 0, 1)]
    row = member_row(hq, m)
    assert (row["visits"], row["spend"], row["fav_category"]) == (1, 20000, "COFFEE")
    assert hq.store.verify_crm().ok


def test_verify_finds_drift_and_rebuild_repairs_it(hq: Hq) -> None:
    t = enrol(hq, "S1")
    m = new_id()
    push(hq, t, 1, [sale_event("R1", m, [("KOPI", 1, 20000, "COFFEE")]), Event(new_id(), ev.EARNED, T0, m, 3, "x")])
    assert hq.store.verify_crm().to_dict() == {"ok": True, "members": 1, "lines": 1}
    with hq.store._tx() as c:  # type: ignore[attr-defined]
        hq.store._x(c, "UPDATE crm_members SET spend = 1, balance = 99 WHERE member = ?", (m,))  # type: ignore
        hq.store._x(c, "DELETE FROM sale_lines")  # type: ignore[attr-defined]
    report = hq.store.verify_crm()
    assert not report.ok
    assert report.member_diffs[0]["member"] == m
    assert report.member_diffs[0]["columns"]["balance"] == {"live": 99, "rebuilt": 3}
    assert report.member_diffs[0]["columns"]["spend"] == {"live": 1, "rebuilt": 20000}
    assert report.line_diffs[0]["columns"]["sku"] == {"live": None, "rebuilt": "KOPI"}
    assert hq.store.rebuild_crm().ok
    assert hq.store.verify_crm().ok and member_row(hq, m)["spend"] == 20000


def test_erasure_scrubs_the_record_and_survives_a_rebuild(hq: Hq) -> None:
    t = enrol(hq, "S1")
    m = new_id()
    push(hq, t, 1, [sale_event("R1", m, [("KOPI", 1, 20000, None)])],
         [{"id": m, "phone": "+6281234567890", "name": "Dewi", "email": "d@example.id", "birthday": "1990-05-17"}])
    hq.store.erase(m, T0)
    row = member_row(hq, m)
    assert (row["phone"], row["name"], row["email"], row["birthday"], row["erased"]) == (None, None, None, None, 1)
    assert row["visits"] == 1  # figures are not personal data
    assert hq.store.verify_crm().ok
    hq.store.rebuild_crm()
    assert member_row(hq, m)["name"] is None


def test_a_merge_moves_the_alias_lines_to_the_survivor(hq: Hq) -> None:
    t = enrol(hq, "S1")
    alias, survivor = new_id(), new_id()
    nxt = push(hq, t, 1, [sale_event("R1", alias, [("KOPI", 1, 20000, None)]),
                          sale_event("R2", survivor, [("ROTI", 1, 15000, None)])])
    merged = Event(derived_id("merge", alias, survivor), MERGED, T0, alias, 0, None, {"into": survivor})
    with hq.store._tx() as c:  # type: ignore[attr-defined]  # as HQ writes its own events
        hq.store._insert_hq_event(c, merged)  # type: ignore[attr-defined]
        hq.store._crm_after_ingest(c, [], [merged], [])  # type: ignore[attr-defined]
    push(hq, t, nxt, [sale_event("R3", alias, [("TEH", 1, 5000, None)])])  # an offline till, later
    assert rows(hq, "SELECT DISTINCT member FROM sale_lines") == [(survivor,)]
    assert member_row(hq, alias)["merged_into"] == survivor
    assert (member_row(hq, alias)["visits"], member_row(hq, survivor)["visits"]) == (0, 3)
    assert hq.store.verify_crm().ok


def test_member_record_is_the_whole_customer(hq: Hq) -> None:
    t = enrol(hq, "S1")
    m = new_id()
    old = T0 - dt.timedelta(days=100)
    push(hq, t, 1, [
        Event(new_id(), ev.ENROLLED, old, m, 0, None, {"consent": {"whatsapp": True, "email": False, "sms": True}}),
        sale_event("R0", m, [("KOPI", 1, 30000, "COFFEE")], at=old),
        sale_event("R1", m, [("KOPI", 2, 20000, "COFFEE"), ("ROTI", 1, 15000, "BAKERY")]),
        Event(new_id(), ev.EARNED, T0, m, 12, "S1/R1", {}),
        Event(new_id(), ev.REDEEMED, T0, m, -10, "kopi-gratis", {"reward": "kopi-gratis", "name": "Kopi", "cost": 10}),
        Event(derived_id("claim", "tok"), ev.CLAIMED, T0, m, 2, "R7", {"token": "tok", "store": "S1", "receipt": "R7"}),
    ], [{"id": m, "phone": "+6281234567890", "name": "Dewi"}])
    rec = member_record(hq.store, hq.program(), MemberRef(phone="0812-3456-7890"), T0 + dt.timedelta(days=1))
    assert rec["member"] == m and rec["profile"]["name"] == "Dewi"
    assert rec["consent"] == {"whatsapp": True, "email": False, "sms": True}
    f = rec["figures"]
    assert (f["visits"], f["visits_30d"], f["visits_90d"], f["visits_365d"]) == (2, 1, 1, 2)
    assert (f["spend"], f["spend_30d"], f["spend_365d"]) == (85000, 55000, 85000)
    assert rec["balance"] == 4 and rec["card"]["filled"] == 4
    assert [s["receipt"] for s in rec["sales"]] == ["R1", "R0"] and len(rec["sales"][0]["lines"]) == 2
    assert rec["rewards"][0]["reward"] == "kopi-gratis" and rec["claims"][0]["receipt"] == "R7"
    with pytest.raises(MemberNotFound, match="no such member"):
        member_record(hq.store, hq.program(), MemberRef(member="NOPE"), T0)


# -- live = rebuild after random ingests -----------------------------------------------------

ACTIONS = st.lists(st.tuples(st.sampled_from(["sale", "guest", "refund", "void", "earn", "redeem", "consent",
                                               "mission", "resend"]),
                             st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=25)


def run_actions(hq: Hq, actions: list[tuple[str, int, int]]) -> None:
    """Apply random till behaviour through real pushes (in batches, some sent twice)."""
    t = enrol(hq, "S1")
    members = [new_id() for _ in range(4)]
    sales: list[tuple[str, str | None]] = []
    pending: list[Event] = []
    seq = 1
    last: tuple[int, list[Event]] | None = None
    for kind, who, n in actions:
        m = members[who]
        at = T0 + dt.timedelta(days=n * 3, hours=who)
        if kind in ("sale", "guest"):
            receipt = f"R{len(sales)}"
            member = m if kind == "sale" else None
            pending.append(sale_event(receipt, member, [("KOPI", 1 + n % 3, 20000, "COFFEE"),
                                                        ("ROTI", 1, 15000 + n, None)], at=at, discount=n * 7))
            sales.append((receipt, member))
            if member:
                pending.append(Event(new_id(), ev.EARNED, at, member, 1 + n, f"S1/{receipt}", {}))
        elif kind in ("refund", "void") and sales:
            receipt, member = sales[n % len(sales)]
            lines = {"KOPI": 1} if kind == "refund" else {"KOPI": 3, "ROTI": 1}
            pending.append(refund_event(receipt, member, lines, 20000))
        elif kind == "earn":
            pending.append(Event(new_id(), ev.EARNED, at, m, n + 1, "x", {}))
        elif kind == "redeem":  # may overdraw: HQ then writes an adjustment
            pending.append(Event(new_id(), ev.REDEEMED, at, m, -(n + 3), "r", {"reward": "r", "cost": n + 3}))
        elif kind == "consent":
            pending.append(Event(new_id(), ev.CONSENT, at, m, 0, None, {"consent": {"sms": bool(n % 2)}}))
        elif kind == "mission":
            pending.append(Event(new_id(), ev.MISSION, at, m, 1, "ms", {"mission": "ms", "badge": f"b{n % 2}"}))
        elif kind == "resend" and last is not None:
            hq.push(t, batch(t, last[0], last[1]))  # a duplicate push: nothing changes
        if (len(pending) >= 3 or kind == "resend") and pending:
            last = (seq, pending)
            seq = push(hq, t, seq, pending)
            pending = []
    if pending:
        push(hq, t, seq, pending)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_live_read_model_equals_a_rebuild_sqlite(actions: list[tuple[str, int, int]]) -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        run_actions(hq, actions)
        report = hq.store.verify_crm(chunk=7)  # small chunks: the rebuild's chunking is exercised too
        assert report.ok, report.to_dict()
    finally:
        hq.store.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_live_read_model_equals_a_rebuild_postgresql(pg_server: Any, actions: list[tuple[str, int, int]]) -> None:
    # One database for every example: the comparison covers everything stored so far.
    hq = Hq(open_hq_store(str(pg_server.url())), clock=Clock())
    if hq.program() is None:
        hq.publish_program(program_source())
    try:
        run_actions(hq, actions)
        report = hq.store.verify_crm(chunk=11)
        assert report.ok, report.to_dict()
    finally:
        hq.store.close()


def test_verify_and_rebuild_on_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    hq = Hq(open_hq_store(url), clock=Clock())
    hq.publish_program(program_source())
    t = enrol(hq, "S1")
    m = new_id()
    push(hq, t, 1, [sale_event("R1", m, [("KOPI", 1, 20000, None)])])
    with hq.store._tx() as c:  # type: ignore[attr-defined]
        hq.store._x(c, "UPDATE crm_members SET visits = 7")  # type: ignore[attr-defined]
    hq.store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tillstamp", "hq", *args, "--db", url, "--json"],
                              check=False, capture_output=True, text=True, timeout=120)

    bad = cli("verify")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["member_diffs"][0]["columns"]["visits"] == {"live": 7, "rebuilt": 1}
    assert cli("rebuild").returncode == 0
    ok = cli("verify")
    assert (ok.returncode, json.loads(ok.stdout)["ok"]) == (0, True)
    shown = cli("member", "show", m)
    assert shown.returncode == 0 and json.loads(shown.stdout)["figures"]["visits"] == 1
    missing = cli("member", "show", "--phone", "0812 0000 0000")
    assert missing.returncode == 2 and "no such member" in missing.stderr


def test_event_tuple_matches_the_wire() -> None:
    e = Event("E1", ev.SALE, T0, "M", 0, "S1/R1", {"b": 1, "a": 2}, 3, "T", "S1")
    assert event_tuple(e) == ("E1", "T", "S1", 3, ev.SALE, "M", T0.isoformat(), 0, "S1/R1", '{"a":2,"b":1}')


TIER_EVENTS = st.lists(st.tuples(st.sampled_from([ev.EARNED, ev.REVERSED, ev.REDEEMED, ev.MISSION]),
                                 st.integers(1, 40), st.integers(0, 800), st.integers(0, 86399)),
                       min_size=1, max_size=30)


def check_tier_is_tier_at(hq: Hq, spec: list[tuple[str, int, int, int]]) -> None:
    from tillstamp.loyalty.projections import tier_at

    t = enrol(hq, "S1")
    m = new_id()
    events = [Event(new_id(), kind, T0 - dt.timedelta(days=day, seconds=sec, microseconds=sec % 3), m,
                    -n if kind in (ev.REVERSED, ev.REDEEMED) else n, "x", {})
              for kind, n, day, sec in spec]
    push(hq, t, 1, events)
    program = hq.program()
    assert program is not None
    counted = [e for e in events if e.kind in ev.EARNING_KINDS | {ev.REVERSED}]
    want = tier_at(program, events, max(e.at for e in counted)).id if counted else None
    assert member_row(hq, m)["tier"] == want


@settings(max_examples=40, deadline=None)
@given(spec=TIER_EVENTS)
def test_the_tier_in_sql_is_projections_tier_at(spec: list[tuple[str, int, int, int]]) -> None:
    hq = Hq(open_hq_store("sqlite:///:memory:"), clock=Clock())
    hq.publish_program(program_source())
    try:
        check_tier_is_tier_at(hq, spec)
    finally:
        hq.store.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=TIER_EVENTS)
def test_the_tier_in_sql_is_projections_tier_at_postgresql(pg_server: Any,
                                                          spec: list[tuple[str, int, int, int]]) -> None:
    hq = Hq(open_hq_store(str(pg_server.url())), clock=Clock())
    if hq.program() is None:
        hq.publish_program(program_source())
    try:
        check_tier_is_tier_at(hq, spec)
    finally:
        hq.store.close()


def test_a_batch_touching_many_members(hq: Hq) -> None:
    # Enough members and lines for the bulk paths (unnest, COPY) on PostgreSQL.
    t = enrol(hq, "S1")
    ms = [new_id() for _ in range(30)]
    events = [Event(new_id(), ev.ENROLLED, T0, m, 0, None, {"consent": {"sms": True}}) for m in ms[:10]]
    events += [Event(new_id(), ev.EARNED, T0, m, i + 1, "x", {}) for i, m in enumerate(ms)]
    events += [sale_event(f"R{i}", m, [("KOPI", 1, 1000 * (i + 1), "COFFEE")] * 3) for i, m in enumerate(ms)]
    push(hq, t, 1, events)
    assert [member_row(hq, m)["balance"] for m in ms] == list(range(1, 31))
    assert [member_row(hq, m)["spend"] for m in ms] == [3000 * (i + 1) for i in range(30)]
    assert sum(member_row(hq, m)["consent_sms"] for m in ms) == 10
    assert [member_row(hq, m)["tier"] for m in ms] == ["bronze"] * 29 + ["silver"]  # silver from 30 stamps
    assert rows(hq, "SELECT count(*) FROM sale_lines") == [(90,)]
    assert hq.store.verify_crm().ok


def test_an_award_two_tills_derived_counts_once(hq: Hq) -> None:
    a, b = enrol(hq, "S1"), enrol(hq, "S1")
    m = new_id()
    mission = Event(derived_id("mission", m, "rajin", "2026-W10"), ev.MISSION, T0, m, 5, "rajin",
                    {"mission": "rajin", "badge": "rajin-ngopi"})
    push(hq, a, 1, [Event(new_id(), ev.EARNED, T0, m, 1, "x", {}), mission])
    push(hq, b, 1, [Event(new_id(), ev.EARNED, T0, m, 2, "y", {}), mission])
    assert hq.store.balances()[m] == 8
    assert member_row(hq, m)["balance"] == 8 and json.loads(member_row(hq, m)["badges"]) == ["rajin-ngopi"]
    assert hq.store.verify_crm().ok
