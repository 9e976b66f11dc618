"""Two tills, one member, HQ in the middle: the local view (rule 6), offline caps (rule 7),
overdraft compensation, enrolment of a till that ran alone, erasure, revocation, keys."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tillstamp.agent.enroll import enroll_existing
from tillstamp.agent.service import Refused
from tillstamp.agent.sync_store import client_for
from tillstamp.agent.till import init_till, open_till
from tillstamp.loyalty import events as ev

from .conftest import PROGRAM, T0, HqHarness, TillHandle, sale


def agree(hq: HqHarness, member: str, *tills: TillHandle) -> int:
    for t in tills:
        t.client.push()
    for t in tills:
        t.client.pull()
    at_hq = sum(e.stamps for e in hq.hq.store.member_events(member))
    assert hq.hq.store.balances()[member] == at_hq
    for t in tills:
        assert t.service.view(member).balance == at_hq, t.till.config.terminal
    return at_hq


def test_enrol_at_a_earn_at_b_redeem_at_a_offline_then_everyone_agrees(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    m = a.service.enroll("081234567890", name="Ani")
    a.service.record_sale(sale("A1", m.id, 100000))  # 1 visit + 4 spend = 5
    a.service.record_sale(sale("A2", m.id, 100000))
    assert agree(hq, m.id, a, b) == 10

    # A goes offline. At B the member earns and spends; B is online.
    b.service.record_sale(sale("B1", m.id, 100000))  # 5, and the third visit this week: mission +2
    b.client.push()
    assert b.service.view(m.id).balance == 17
    b.service.redeem(m.id, "kopi-gratis")  # 10
    b.client.push()
    # At A, offline, the local view still says 10: the redemption is within the caps.
    assert a.service.view(m.id).balance == 10
    a.service.redeem(m.id, "kopi-gratis")  # 10

    # After both sync: 17 - 10 - 10 = -3 at the merge, so HQ adds +3 and raises an alert.
    assert agree(hq, m.id, a, b) == 0
    events = hq.hq.store.member_events(m.id)
    assert [e.stamps for e in events if e.kind == ev.ADJUSTED] == [3]
    assert [x["kind"] for x in hq.hq.store.alerts()] == ["overdraft"]
    # Never a lost event: every event of both tills is at HQ.
    assert {e.id for t in (a, b) for e in t.till.store.events()} <= {e.id for e in events}


def test_local_view_counts_snapshot_plus_own_events_after_the_watermark(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("A1", m.id, 100000))
    a.client.push()
    a.client.pull()
    events, w = a.till.sync.remote(m.id)  # type: ignore[union-attr]
    assert w == 3 and len(events) == 3
    a.service.record_sale(sale("A2", m.id, 100000))  # seq 4, 5 > W: counted once from the ledger
    assert a.service.view(m.id).balance == 10
    assert len(a.service.member_events(m.id)) == 5


def test_offline_caps_refuse_beyond_the_promise(hq_caps: HqHarness, tmp_path: Path) -> None:
    a = hq_caps.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    for i in range(8):
        a.service.record_sale(sale(f"A{i}", m.id, 100000))
    a.client.push()
    a.client.pull()
    a.service.redeem(m.id, "kopi-gratis")
    with pytest.raises(Refused) as e:  # the cap is 15 per member until the next fresh pull
        a.service.redeem(m.id, "pastry-gratis")
    assert e.value.reason == "offline_cap_member"
    a.client.push()
    a.client.pull()
    a.service.redeem(m.id, "pastry-gratis")
    a.clock.advance(hours=73)
    with pytest.raises(Refused) as e:
        a.service.redeem(m.id, "pastry-gratis")
    assert e.value.reason == "offline_too_long"
    status = a.till.sync.status(a.till.program.offline)  # type: ignore[union-attr]
    x = status["exposure"]
    assert (x["terminals"], x["worst_overdraft_per_member"], x["worst_overdraft_total"]) == (1, 0, 100)
    assert status["exposure"]["redeemed_blind"] == 6


@pytest.fixture
def hq_caps(hq: HqHarness) -> HqHarness:
    hq.publish(max_per_member=15, max_per_terminal=100, max_offline_hours=72, max_clock_skew_s=300)
    return hq


def test_clock_skew_refuses_offline_redemption(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("A1", m.id, 300000))
    a.client.push()
    a.clock.advance(hours=2)  # the till's clock runs two hours ahead of HQ
    hq.clock.advance(seconds=1)
    a.client.pull()
    with pytest.raises(Refused) as e:
        a.service.redeem(m.id, "pastry-gratis")
    assert e.value.reason == "clock_skew"


def test_a_till_that_ran_alone_enrols_and_its_ledger_and_cards_sync_up(hq: HqHarness, tmp_path: Path) -> None:
    data = tmp_path / "alone"
    init_till(data, store="S9", terminal="KASIR-1", program=PROGRAM)
    with open_till(data, clock=lambda: T0) as till:
        m = till.service.enroll("081298765432", name="Budi")
        till.service.record_sale(sale("X1", m.id, 100000))
        card = till.service.member_card(m.id)
    code = hq.hq.new_code("S9")
    out = enroll_existing(data, hq="http://hq.test", code=code, transport=hq.transport)
    assert (out["terminal"], out["store"]) == ("KASIR-1", "S9")
    assert not (data / "keys" / "member-signing.pem").exists()
    with open_till(data, clock=lambda: T0) as till:
        assert till.sync is not None and till.keys.member_signing is None
        client = client_for(till.store, till.keys, till.sync, "http://hq.test", transport=hq.transport, clock=lambda: T0)
        assert client.push().acked == 3
    assert hq.hq.store.balances()[m.id] == 5
    assert hq.hq.store.stats()["terminals"][0]["terminal"] == "KASIR-1"
    b = hq.till(tmp_path, "b", "S2")
    b.client.pull()
    assert b.service.identify(card).id == m.id  # the card printed alone still works elsewhere
    assert b.service.view(m.id).balance == 5
    assert b.till.store.member(m.id).name == "Budi"  # type: ignore[union-attr]


def test_erasure_reaches_tills_and_is_never_recreated(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890", name="Ani")
    a.service.record_sale(sale("A1", m.id))
    a.client.push()
    hq.hq.store.erase(m.id, hq.clock())
    a.client.pull()
    row = a.till.store.member(m.id)
    assert row is not None and row.phone is None and row.name is None
    assert a.till.sync.members_changed(0, 100) == []  # type: ignore[union-attr]


def test_revoked_cards_and_claims_from_other_tills(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    m = a.service.enroll("081234567890")
    a.client.push()
    card = __import__("tillstamp.loyalty.tokens", fromlist=["x"]).sign_member(
        hq.hq.signing_key(), m.id, T0 - dt.timedelta(days=1))
    b.client.pull()
    assert b.service.identify(card).id == m.id
    hq.hq.store.revoke(m.id, T0, T0)
    b.client.pull()
    with pytest.raises(Refused) as e:
        b.service.identify(card)
    assert e.value.reason == "token_revoked"
    claim = a.service.record_sale(sale("A9", None, 100000)).claim
    assert claim
    b.client.pull()  # brings A's terminal key
    out = b.service.claim(claim, m.id)
    assert out.stamps == 5


def test_a_new_program_version_reaches_the_till(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    v = hq.publish(max_per_member=7)
    a.client.pull()
    a.close()
    with open_till(a.data) as till:
        assert till.program.version == v and till.program.offline.max_per_member == 7


def test_attach_sync_distrusts_a_clock_far_from_head_office() -> None:
    from tillstamp.agent.keys import Keys
    from tillstamp.agent.service import Service
    from tillstamp.agent.store import open_store
    from tillstamp.agent.sync_store import attach_sync
    from tillstamp.loyalty.program import load_program

    store = open_store(":memory:")
    program = load_program(Path(__file__).resolve().parents[2] / "examples" / "program.toml")
    service = Service(store, program, Keys.generate("T1"), store_id="S", terminal_id="T1")
    sync = attach_sync(store, service, service.keys, "http://127.0.0.1:9")
    assert sync is not None and service.clock_trusted()
    now = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    sync.note_contact(hq_time=now, local_time=now + dt.timedelta(days=1))
    assert not service.clock_trusted()
    sync.note_contact(hq_time=now, local_time=now + dt.timedelta(seconds=30))
    assert service.clock_trusted()
