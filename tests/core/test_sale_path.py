"""The sale path's shortcuts give exactly what the general code gives.

Each shortcut (a head written directly, a line or head checked in one expression, projections
written per batch, folds that skip work, a member id not read twice, events placed in UTC) is
checked here against the general form it replaces, so a shortcut that drifts fails a test.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import sale_dict

from tillstamp.agent.service import Refused
from tillstamp.agent.store import REBUILD_CHUNK, open_store
from tillstamp.loyalty import events as ev
from tillstamp.loyalty import projections as pj
from tillstamp.loyalty import rules
from tillstamp.loyalty.events import Event, canonical, content_hash
from tillstamp.loyalty.program import Mission
from tillstamp.loyalty.sale import SaleError, _parse_line, _parse_line_fields, parse_sale

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
UTC = dt.UTC
WIB = dt.timezone(dt.timedelta(hours=7))
texts = st.text(max_size=70)
maybe_texts = st.none() | texts
times = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2027, 12, 31),
                     timezones=st.sampled_from([UTC, WIB, dt.timezone(dt.timedelta(hours=-5))]))


# -- the event head written directly --------------------------------------------------------


def reference_hash(e: Event, prev: str) -> str:
    head = e.to_wire()
    del head["body"]
    return hashlib.sha256(prev.encode() + canonical(head) + b"\x1f" + canonical(e.body)).hexdigest()


@SETTINGS
@given(eid=texts, kind=texts, member=maybe_texts, ref=maybe_texts, terminal=texts, store=texts,
       stamps=st.integers(-10**7, 10**7) | st.booleans(), seq=st.integers(0, 10**9), at=times,
       body=st.dictionaries(texts, st.integers() | texts, max_size=3))
def test_event_hash_with_the_head_written_directly_is_the_canonical_one(eid, kind, member, ref, terminal, store,
                                                                        stamps, seq, at, body):
    e = Event(eid, kind, at, member, stamps, ref, body, seq, terminal, store)
    assert content_hash(e, "prev") == reference_hash(e, "prev")
    assert content_hash(e, "", canonical(body), ev.utc_text(at)) == reference_hash(e, "")


# -- checks in one expression ---------------------------------------------------------------


def reference_head_problem(eid, terminal, store, kind, member, ref, stamps):
    for name, value, lo, hi, nullable in (("id", eid, 1, rules.MAX_ID, False),
                                          ("terminal", terminal, 1, rules.MAX_ID, False),
                                          ("store", store, 1, rules.MAX_ID, False),
                                          ("kind", kind, 1, rules.MAX_KIND, False),
                                          ("member", member, 0, rules.MAX_ID, True),
                                          ("ref", ref, 0, rules.MAX_REF, True)):
        if value is None and nullable:
            continue
        problem = rules.text_problem(value, hi, lo)
        if problem is not None:
            return f"{name}: {problem}"
    if kind not in ev.KINDS:
        return f"kind: unknown kind {kind!r}"
    if type(stamps) is not int or not -rules.MAX_EVENT_STAMPS <= stamps <= rules.MAX_EVENT_STAMPS:
        return f"stamps: must be an integer within +-{rules.MAX_EVENT_STAMPS:,}"
    return None


ids = st.text(alphabet=st.sampled_from("AB09-\x00\x7f\ud800é"), max_size=66) | st.integers() | st.none()


@SETTINGS
@given(eid=ids, terminal=ids, store=ids, kind=st.sampled_from(sorted(ev.KINDS)) | ids, member=ids,
       ref=ids | st.text(max_size=210), stamps=st.integers(-2_000_000, 2_000_000) | st.booleans() | st.none())
def test_event_head_check_in_one_expression_agrees_with_the_field_by_field_one(eid, terminal, store, kind, member,
                                                                               ref, stamps):
    assert rules.head_problem(eid, terminal, store, kind, member, ref, stamps) == \
        reference_head_problem(eid, terminal, store, kind, member, ref, stamps)


line_values = st.fixed_dictionaries(
    {"sku": st.text(alphabet=st.sampled_from("K1 -\x00\ud800"), max_size=66) | st.integers()},
    optional={"name": st.text(alphabet=st.sampled_from("Na \x1f"), max_size=202) | st.none(),
              "category": st.text(alphabet=st.sampled_from("c \x85"), max_size=66) | st.none() | st.integers(),
              "qty": st.integers(-1, 100_001) | st.booleans() | st.floats(0, 3) | st.none(),
              "price": st.integers(-1, 10**13 + 1) | st.booleans() | st.none(),
              "paid_with_stamps": st.booleans() | st.integers(0, 1) | st.none(),
              "colour": st.just("red")},
) | st.lists(st.integers(), max_size=1)


def parsed_or_error(f, ln):
    try:
        return f(0, ln)
    except SaleError as e:
        return str(e)


@SETTINGS
@given(ln=line_values)
def test_sale_line_check_in_one_expression_agrees_with_the_field_by_field_one(ln):
    assert parsed_or_error(_parse_line, ln) == parsed_or_error(_parse_line_fields, ln)


# -- projections written per batch ----------------------------------------------------------


def busy_ledger(service, clock):
    """Every kind of event the projections read, several in one batch where a sale makes them."""
    budi = service.enroll("081234567890", "Budi", consent=["whatsapp"])
    sari = service.enroll("081234567891", "Sari")
    for i in range(6):  # three visits in a week: a mission completes inside a sale's batch
        service.record_sale(parse_sale(sale_dict(f"R-{i}", member=budi.id), now=service.now()))
        clock.advance(hours=1)
    guest = service.record_sale(parse_sale(sale_dict("G-1"), now=service.now()))
    service.claim(guest.claim, sari.id)
    service.refund("R-1", {"KOPI-SUSU": 1})
    service.refund("R-2")
    service.redeem(budi.id, "pastry-gratis")
    return budi, sari


def test_projections_written_per_batch_equal_one_event_at_a_time(service, clock, monkeypatch):
    import tillstamp.agent.store as store_module

    busy_ledger(service, clock)
    live = service.store.projection_snapshot()
    kinds = {e.kind for e in service.store.events()}
    assert {ev.SALE, ev.EARNED, ev.MISSION, ev.CLAIMED, ev.REFUNDED, ev.REVERSED, ev.REDEEMED, ev.ENROLLED} <= kinds
    for chunk in (1, 2, 3, REBUILD_CHUNK):  # 1 is one statement per event, in ledger order
        monkeypatch.setattr(store_module, "REBUILD_CHUNK", chunk)
        with service.store.dry_run():
            service.store.rebuild_projections()
            assert service.store.projection_snapshot() == live, f"batches of {chunk}"


def test_a_sale_row_written_with_its_earned_stamps_is_the_row_a_rebuild_gives(service, clock):
    budi, _ = busy_ledger(service, clock)
    row = service.store.sale("JKT-01/R-0")
    earned = [e for e in service.store.events() if e.kind == ev.EARNED and e.ref == "JKT-01/R-0"]
    assert row is not None and row.stamps == earned[0].stamps > 0
    assert service.store.balance(budi.id) == sum(e.stamps for e in service.store.member_events(budi.id))


def test_a_second_sale_under_one_key_in_a_batch_still_fails(fresh_store):
    at = dt.datetime(2026, 11, 23, 2, tzinfo=UTC)
    body = {"receipt": "R", "total": 1, "digest": "d", "lines": []}
    sale = [Event(ev.new_id(), ev.SALE, at, None, 0, "S/R", body), Event(ev.new_id(), ev.SALE, at, None, 0, "S/R", body)]
    import sqlite3

    with pytest.raises(sqlite3.IntegrityError), fresh_store.write():
        fresh_store.append(sale, terminal="T1", store="S")
    assert fresh_store.count_events() == 0


# -- folds that skip work -------------------------------------------------------------------


def reference_due_expiries(program, events, now):
    if not program.expiry.months:
        return []
    open_lots, _ = pj.lots(program, events)
    return [lot for lot in open_lots if lot.expires_at is not None and lot.expires_at <= now]


stamp_events = st.lists(st.tuples(times, st.integers(-5, 8), st.booleans()), max_size=25)


@SETTINGS
@given(items=stamp_events, now=times, months=st.integers(1, 13))
def test_expiry_that_skips_recent_lots_finds_the_same_lots(program, items, now, months):
    import dataclasses

    prog = dataclasses.replace(program, expiry=dataclasses.replace(program.expiry, months=months))
    evs = []
    for i, (at, stamps, expired) in enumerate(items):
        kind = ev.EXPIRED if expired and stamps < 0 and evs else (ev.EARNED if stamps >= 0 else ev.REDEEMED)
        body = {"lot": evs[0].id} if kind == ev.EXPIRED else {}
        evs.append(Event(f"E{i}", kind, at, "M", stamps, None, body))
    got = [(lot.event_id, lot.remaining, lot.expires_at) for lot in pj.due_expiries(prog, evs, now)]
    want = [(lot.event_id, lot.remaining, lot.expires_at) for lot in reference_due_expiries(prog, evs, now)]
    assert got == want


def reference_progress(program, mission, events, at):
    """mission_progress as it was: a period key formatted and compared per visit."""
    zone = program.zone
    local = at.astimezone(zone)
    vs = pj.visits(events, zone)
    if mission.kind == "checkin_streak":
        return pj.mission_progress(program, mission, events, at)
    key = pj.period_key(mission, local)
    in_period = [v for v in vs if v.at <= at and pj.period_key(mission, v.local) == key]
    if mission.kind == "visits_in_week":
        return len(in_period), key
    if mission.kind == "distinct_skus":
        return len(frozenset().union(*(v.skus for v in in_period))), key
    spent = sum(v.total for v in in_period)
    for e in events:
        if e.kind == ev.REFUNDED and e.at <= at and pj.period_key(mission, e.at.astimezone(zone)) == key:
            spent -= int(e.body.get("amount", 0))
    return max(spent, 0), key


zones = st.sampled_from([UTC, WIB, dt.timezone(dt.timedelta(hours=-5))])
# Visits around `at` (minutes before or after it), so that weeks and months are shared and split.
near = st.integers(-60 * 24 * 9, 60 * 24) | st.integers(-60 * 24 * 70, 60 * 24 * 3)
visit_events = st.lists(st.tuples(near, zones, st.sampled_from(["A", "B", "C"]),
                                  st.booleans()), max_size=20)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=visit_events, at=times, period=st.sampled_from(["week", "month", "year", "ever"]),
       kind=st.sampled_from(["visits_in_week", "distinct_skus", "spend_target"]))
def test_mission_periods_tested_without_keys_count_what_the_keys_count(program, items, at, period, kind):
    mission = Mission(id="m", name="m", kind=kind, target=3, stamps=1, badge=None, period=period)
    evs = []
    for i, (minutes, zone, sku, refund) in enumerate(items):
        t = (at + dt.timedelta(minutes=minutes)).astimezone(zone)
        if refund:
            evs.append(Event(f"F{i}", ev.REFUNDED, t, "M", 0, None, {"amount": 1000}))
        else:
            evs.append(Event(f"S{i}", ev.SALE, t, "M", 0, None,
                             {"total": 5000, "lines": [{"sku": sku, "eligible": True}]}))
    assert pj.mission_progress(program, mission, evs, at) == reference_progress(program, mission, evs, at)


def reference_qualifying(program, events, at):
    since = pj.add_months(at, -program.tiering.window_months)
    total = 0
    for e in events:
        if not since < e.at <= at:
            continue
        if program.tiering.qualify_on == "stamps":
            if e.kind in ev.EARNING_KINDS or e.kind == ev.REVERSED:
                total += e.stamps
        elif e.kind in (ev.SALE, ev.CLAIMED) and "total" in e.body:
            total += int(e.body["total"])
        elif e.kind == ev.REFUNDED:
            total -= int(e.body.get("amount", 0))
    return max(total, 0)


def reference_tier_at(program, events, at):
    now_tier = pj.tier_for(program, reference_qualifying(program, events, at))
    if program.tiering.downgrade == "immediate" or now_tier is program.tiers[-1]:
        return now_tier
    local = at.astimezone(program.zone)
    year_start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    held = pj.tier_for(program, reference_qualifying(program, events, year_start))
    return held if held.threshold > now_tier.threshold else now_tier


tier_events = st.lists(st.tuples(times, st.sampled_from([ev.EARNED, ev.MISSION, ev.REVERSED, ev.REDEEMED, ev.SALE,
                                                          ev.REFUNDED]), st.integers(0, 40)), max_size=25)


@SETTINGS
@given(items=tier_events, at=times, on=st.sampled_from(["stamps", "spend"]),
       downgrade=st.sampled_from(["period_end", "immediate"]))
def test_tier_measured_in_one_pass_is_the_tier_of_two_passes(program, items, at, on, downgrade):
    import dataclasses

    prog = dataclasses.replace(program, tiering=dataclasses.replace(program.tiering, qualify_on=on,
                                                                    downgrade=downgrade))
    evs = [Event(f"E{i}", kind, t, "M", -n if kind in (ev.REVERSED, ev.REDEEMED) else n, None,
                 {"total": n * 10_000, "amount": n * 1000}) for i, (t, kind, n) in enumerate(items)]
    assert pj.qualifying(prog, evs, at) == reference_qualifying(prog, evs, at)
    assert pj.tier_at(prog, evs, at) == reference_tier_at(prog, evs, at)


# -- a member id not read twice, events placed in UTC ---------------------------------------


def test_a_member_seen_only_inside_a_rolled_back_write_is_not_remembered(service):
    from tillstamp.agent.store import MemberRow

    with pytest.raises(RuntimeError), service.store.write():
        service.store.add_member(MemberRow("01KAAAAAAAAAAAAAAAAAAAAAAA", None, None, None, None, "till", None), 0)
        assert service.store.has_member("01KAAAAAAAAAAAAAAAAAAAAAAA")
        raise RuntimeError("the request fails after the read")
    assert not service.store.has_member("01KAAAAAAAAAAAAAAAAAAAAAAA")
    with pytest.raises(Refused) as refused:
        service.record_sale(parse_sale(sale_dict("R-1", member="01KAAAAAAAAAAAAAAAAAAAAAAA"), now=service.now()))
    assert refused.value.reason == "unknown_member"
    assert service.store.sale("JKT-01/R-1") is None


def test_a_member_id_that_reads_as_a_token_is_refused_as_identify_refuses_it(service):
    # 26 characters of the ULID alphabet that also start like a token: identify reads a token.
    for text in ("TS1M" + "0" * 22, "TS" + "0" * 24, "00TS1C" + "0" * 20):
        with pytest.raises(Refused) as by_identify:
            service.identify(text)
        with pytest.raises(Refused) as by_id:
            service.member_id(text)
        assert by_id.value.reason == by_identify.value.reason


def test_a_members_events_in_memory_are_those_a_fresh_read_gives(tmp_path, program, keys, clock):
    from tillstamp.agent.service import Service

    path = tmp_path / "till.db"
    store = open_store(path)
    service = Service(store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock)
    budi = service.enroll("081234567890", "Budi")
    service.member_events(budi.id)  # now kept in memory, and extended by each append
    for i in range(4):
        service.record_sale(parse_sale(sale_dict(f"R-{i}", member=budi.id, at="2026-11-23T09:00:00+07:00"),
                                       now=service.now()))
    kept = service.member_events(budi.id)
    other = open_store(path)
    fresh = other.member_events(budi.id)
    assert [e.to_wire() for e in kept] == [e.to_wire() for e in fresh]
    assert [e.at.utcoffset() for e in kept] == [e.at.utcoffset() for e in fresh] == [dt.timedelta(0)] * len(fresh)
    other.close()
    store.close()


# -- a member's kept state in the service ---------------------------------------------------


def assert_kept_is_the_fold(service, member, at):
    state = service._kept(member)
    history = service.member_events(member)
    assert state.events == history
    assert state.balance == pj.balance(history) == service.balance(member)
    assert state.tier_at(at) == pj.tier_at(service.program, history, at)
    assert state.due_missions(at) == pj.due_missions(service.program, member, history, at)
    due = [(lot.event_id, lot.remaining, lot.expires_at) for lot in state.due_expiries(at)]
    assert due == [(lot.event_id, lot.remaining, lot.expires_at)
                   for lot in pj.due_expiries(service.program, history, at)]


def test_the_kept_state_stays_the_fold_through_sales_refunds_claims_expiry_and_rollbacks(service, clock):
    import dataclasses

    service.program = dataclasses.replace(service.program, expiry=dataclasses.replace(service.program.expiry,
                                                                                       months=1))
    budi, sari = busy_ledger(service, clock)
    for member in (budi.id, sari.id):
        assert_kept_is_the_fold(service, member, clock())
    # A refused sale after its expiry was written off in the same transaction: all rolled back.
    clock.advance(days=40)
    big = [{"sku": "GAYO-250", "name": "Gayo", "category": "biji-kopi", "qty": 100_000, "price": 1}]
    with pytest.raises(Refused) as refused:
        service.record_sale(parse_sale(sale_dict("R-BIG", member=budi.id, at=None, lines=big), now=clock()))
    assert refused.value.reason == "too_many_stamps"
    assert_kept_is_the_fold(service, budi.id, clock())
    # Then expiry for real, a sale dated before visits already counted, and more sales.
    service.record_sale(parse_sale(sale_dict("R-LATE", member=budi.id, at=None), now=clock()))
    early = (clock() - dt.timedelta(days=45)).isoformat()
    service.record_sale(parse_sale(sale_dict("R-EARLY", member=budi.id, at=early), now=clock()))
    for i in range(4):
        clock.advance(days=1)
        service.record_sale(parse_sale(sale_dict(f"R-N{i}", member=budi.id, at=None), now=clock()))
        assert_kept_is_the_fold(service, budi.id, clock())
    assert any(e.kind == ev.EXPIRED for e in service.member_events(budi.id))
    # Another process writes for the member (the CLI beside a daemon): the state follows it.
    other = type(service)(service.store, service.program, service.keys, store_id="JKT-01", terminal_id="T1",
                          clock=clock)
    other.redeem(budi.id, "pastry-gratis")
    assert_kept_is_the_fold(service, budi.id, clock())
    # A new program: folded again under it.
    service.program = dataclasses.replace(service.program, tiering=dataclasses.replace(
        service.program.tiering, qualify_on="spend"))
    assert service._kept(budi.id).program is service.program
    assert_kept_is_the_fold(service, budi.id, clock())
