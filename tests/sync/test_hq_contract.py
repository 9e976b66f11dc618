"""One contract for every HQ storage backend (SQLite memory, SQLite file, PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from tillstamp.hq.service import Hq
from tillstamp.hq.store import (
    CursorGone,
    EnrollRefused,
    GapError,
    QuarantineError,
    TerminalRow,
    open_hq_store,
)
from tillstamp.loyalty import events as ev
from tillstamp.loyalty import tokens
from tillstamp.loyalty.events import Event, derived_id, new_id
from tillstamp.sync import protocol as p

from .conftest import T0, Clock, program_source


@pytest.fixture
def hq(hq_url: str) -> Iterator[Hq]:
    h = Hq(open_hq_store(hq_url), clock=Clock())
    h.publish_program(program_source())
    yield h
    h.store.close()


def enrol(hq: Hq, store: str, terminal: str | None = None) -> TerminalRow:
    key = tokens.new_private_key()
    code = hq.new_code(store)
    resp = hq.enroll(p.EnrollRequest(code=code, public_key=tokens.public_bytes(key.public_key()).hex(),
                                     proof=p.enroll_proof(key, code), terminal=terminal))
    t = hq.store.terminal(resp.terminal)
    assert t is not None
    return t


def batch(t: TerminalRow, start: int, events: list[Event]) -> p.PushRequest:
    wires = [e.with_position(seq=start + i, terminal=t.id, store=t.store).to_wire() for i, e in enumerate(events)]
    return p.PushRequest(events=[p.WireEvent(**w) for w in wires])


def earn(member: str, stamps: int, eid: str | None = None) -> Event:
    return Event(eid or new_id(), ev.EARNED if stamps > 0 else ev.REDEEMED, T0, member, stamps, "r", {})


def test_enrolment_codes_are_single_use_and_fit_the_till(hq: Hq) -> None:
    t = enrol(hq, "S1")
    assert t.store == "S1" and t.id.startswith("S1-T")
    key = tokens.new_private_key()
    code = hq.new_code("S1")
    req = p.EnrollRequest(code=code, public_key=tokens.public_bytes(key.public_key()).hex(),
                          proof=p.enroll_proof(key, code), store="S2")
    with pytest.raises(EnrollRefused, match="store S1"):
        hq.enroll(req)
    req = req.model_copy(update={"store": "S1", "terminal": t.id})
    with pytest.raises(EnrollRefused, match="already enrolled"):
        hq.enroll(req)
    ok = hq.enroll(req.model_copy(update={"terminal": "KASIR-9"}))
    assert ok.terminal == "KASIR-9" and ok.program_version == 1 and ok.member_keys
    with pytest.raises(EnrollRefused, match="already used"):
        hq.enroll(req.model_copy(update={"terminal": "KASIR-10"}))


def test_push_is_idempotent_on_terminal_and_seq(hq: Hq) -> None:
    t = enrol(hq, "S1")
    b = batch(t, 1, [earn("M1", 3), earn("M1", 2), earn("M2", 1)])
    r1 = hq.push(t, b)
    r2 = hq.push(t, b)
    assert (r1.acked, r1.inserted) == (3, 3)
    assert (r2.acked, r2.inserted, r2.duplicates) == (3, 0, 3)
    assert hq.stats()["events"] == 3
    assert hq.store.balances() == {"M1": 5, "M2": 1}


def test_a_gap_is_refused_with_the_expected_sequence(hq: Hq) -> None:
    t = enrol(hq, "S1")
    hq.push(t, batch(t, 1, [earn("M1", 1)]))
    with pytest.raises(GapError) as e:
        hq.push(t, batch(t, 3, [earn("M1", 1)]))
    assert e.value.expected == 2
    assert hq.store.terminal(t.id).acked == 1  # type: ignore[union-attr]


def test_same_position_with_other_content_is_quarantined_never_overwritten(hq: Hq) -> None:
    t = enrol(hq, "S1")
    original = [earn("M1", 1), earn("M1", 2)]
    hq.push(t, batch(t, 1, original))
    with pytest.raises(QuarantineError):
        hq.push(t, batch(t, 2, [earn("M1", 7), earn("M1", 1)]))  # a restored till's new seq 2
    stats = hq.stats()
    assert stats["quarantined"] == 1 and stats["events"] == 2
    assert hq.store.balances() == {"M1": 3}
    assert [a["kind"] for a in hq.store.alerts()] == ["quarantine"]
    with pytest.raises(QuarantineError):  # and the terminal stays stopped until a person acts
        hq.push(t, batch(t, 3, [earn("M1", 1)]))


def test_deterministic_ids_from_two_terminals_are_kept_once(hq: Hq) -> None:
    a, b = enrol(hq, "S1"), enrol(hq, "S2")
    mission = derived_id("mission", "M1", "weekly", "2026-W10")
    hq.push(a, batch(a, 1, [earn("M1", 5), earn("M1", 3, mission)]))
    r = hq.push(b, batch(b, 1, [earn("M1", 3, mission)]))
    assert (r.acked, r.inserted, r.duplicates) == (1, 0, 1)
    assert hq.store.balances()["M1"] == 8
    assert sum(1 for e in hq.store.member_events("M1") if e.id == mission) == 1


def test_an_overdraft_becomes_an_hq_adjustment_and_an_alert(hq: Hq) -> None:
    a, b = enrol(hq, "S1"), enrol(hq, "S2")
    hq.push(a, batch(a, 1, [earn("M1", 10), earn("M1", -10)]))
    r = hq.push(b, batch(b, 1, [earn("M1", -6)]))  # redeemed offline on a stale view
    assert r.adjustments == 1
    events = hq.store.member_events("M1")
    assert len(events) == 4 and sum(e.stamps for e in events) == 0
    adj = events[-1]
    assert (adj.kind, adj.terminal, adj.stamps) == (ev.ADJUSTED, "HQ", 6)
    assert [(x["kind"], x["member"], x["detail"]["deficit"]) for x in hq.store.alerts()] == [("overdraft", "M1", 6)]


def test_feed_carries_snapshots_with_the_watermark_program_keys_and_pages(hq: Hq) -> None:
    a, b = enrol(hq, "S1"), enrol(hq, "S2")
    hq.push(a, batch(a, 1, [earn(f"M{i}", 1) for i in range(5)]))
    page = hq.pull(b, 0, limit=3)
    assert page.reset and page.more and len(page.changes) == 3
    seen = list(page.changes)
    while page.more:
        page = hq.pull(b, page.next, limit=3)
        seen += page.changes
    kinds = {c.kind for c in seen}
    assert {"program", "terminal_key", "member_key", "member"} <= kinds
    snap = next(c for c in seen if c.key == "member:M0").data
    assert snap["balance"] == 1 and snap["tier"] == "bronze" and snap["watermark"] == 0
    assert hq.pull(a, 0, limit=100).watermark == 5
    assert hq.pull(b, page.next).changes == []


def test_erasure_scrubs_pii_and_an_offline_till_cannot_recreate_it(hq: Hq) -> None:
    a = enrol(hq, "S1")
    req = batch(a, 1, [earn("M1", 1)])
    req.members = [p.WireMember(id="M1", phone="+6281234567890", name="Ani")]
    hq.push(a, req)
    assert hq.pull(a, 0, 100).changes[-1].data["pii"]["name"] == "Ani"
    hq.store.erase("M1", T0)
    late = batch(a, 2, [earn("M1", 1)])
    late.members = [p.WireMember(id="M1", phone="+6281234567890", name="Ani")]
    hq.push(a, late)
    changes = {c.key: c for c in hq.pull(a, 0, 100).changes}
    assert changes["erased:M1"].kind == "erased"
    # The member's stamps go on being shared; their personal data does not.
    assert changes["member:M1"].data["balance"] == 2 and not changes["member:M1"].data.get("pii")


def test_pruned_feed_sends_old_cursors_to_a_full_snapshot(hq: Hq) -> None:
    a = enrol(hq, "S1")
    hq.store.revoke("M1", T0, T0)
    cursor = hq.pull(a, 0, 100).next
    hq.store.revoke("M2", T0, T0)
    floor = hq.store.prune_feed(["revoked"], T0 + dt.timedelta(days=1))
    assert floor > cursor
    with pytest.raises(CursorGone):
        hq.pull(a, cursor - 1, 100)
    assert hq.pull(a, 0, 100).reset


def test_nonces_are_accepted_once_and_stats_list_terminals(hq: Hq) -> None:
    a = enrol(hq, "S1")
    ms = int(T0.timestamp() * 1000)
    assert hq.store.note_request(a.id, "n" * 16, ms, T0, 1.5, 300)
    assert not hq.store.note_request(a.id, "n" * 16, ms, T0, 1.5, 300)
    stats = hq.stats()
    assert {"events", "sales", "quarantined", "terminals"} <= stats.keys()
    (term,) = stats["terminals"]
    assert term["terminal"] == a.id and term["store"] == "S1" and term["clock_offset_s"] == 1.5
    assert {"acked", "last_seen"} <= term.keys()
