"""A push applied chunk by chunk (PostgreSQL: decode overlapped with the database) keeps the
semantics of a batch applied at once, on every backend and in both wire forms (JSON and
ledger lines). CHUNK is made tiny so that every batch here spans several chunks."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tillstamp.hq import service as hq_module
from tillstamp.hq.service import AuthFailed, BadBatch, Hq
from tillstamp.hq.store import QuarantineError, TerminalRow, open_hq_store
from tillstamp.loyalty.events import Event, canonical, content_hash
from tillstamp.sync.wire import LEDGER_TYPE, head_json

from .conftest import T0, Clock, program_source
from .test_hq_contract import earn, enrol


@pytest.fixture
def hq(hq_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hq]:
    monkeypatch.setattr(hq_module, "CHUNK", 2)
    h = Hq(open_hq_store(hq_url), clock=Clock())
    h.publish_program(program_source())
    yield h
    h.store.close()


@pytest.fixture(params=["json", "ledger"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def body(form: str, t: TerminalRow, start: int, events: list[Event], *, tip: bool | str = True, prev: str = "",
         **override: object) -> tuple[bytes, str]:
    """A push body in `form` and its content type; `override` sets e{i}_{field} on the wire."""
    placed = [e.with_position(seq=start + i, terminal=t.id, store=t.store) for i, e in enumerate(events)]
    wires = [e.to_wire() for e in placed]
    h = prev
    for e in placed:
        h = content_hash(e, h)
    for k, v in override.items():
        i, key = k.rsplit("_", 1)
        wires[int(i.removeprefix("e"))][key] = v
    hash_ = {"hash": h if tip is True else tip} if tip else {}
    if form == "json":
        return json.dumps({"events": wires, "members": [], **hash_}, default=str).encode(), "application/json"
    lines = [head_json(w["id"], w["terminal"], w["store"], w["seq"], w["kind"], w["member"], w["at"], w["stamps"],
                       w["ref"]) + "\x1f" + canonical(w["body"]).decode() for w in wires]
    return "\n".join([*lines, json.dumps({"members": [], **hash_})]).encode(), LEDGER_TYPE


def test_chunks_apply_like_one_batch(hq: Hq, form: str) -> None:
    t = enrol(hq, "S1")
    evs = [earn("M1", 3), earn("M2", 1), earn("M1", -5), earn("M1", 4), earn("M3", 2), earn("M3", -4), earn("M2", 1)]
    r = hq.push_raw(t, *body(form, t, 1, evs))
    assert (r.acked, r.inserted, r.duplicates) == (7, 7, 0)
    # M1 dipped below zero in one chunk and came back; only M3 ends the batch overdrawn.
    assert r.adjustments == 1
    assert hq.store.balances() == {"M1": 2, "M2": 2, "M3": 0}
    assert [a["member"] for a in hq.store.alerts()] == ["M3"]
    members = {c.key for c in hq.pull(t, 0, 1000).changes if c.kind == "member"}
    assert members == {"member:M1", "member:M2", "member:M3"}
    again = hq.push_raw(t, *body(form, t, 1, evs))  # a resend: all duplicates, nothing moves
    assert (again.acked, again.inserted, again.duplicates, again.adjustments) == (7, 0, 7, 0)
    assert hq.store.balances() == {"M1": 2, "M2": 2, "M3": 0}


def test_an_id_already_held_from_another_terminal_is_kept_once(hq: Hq, form: str) -> None:
    a, b = enrol(hq, "S1"), enrol(hq, "S1")
    shared = earn("M1", 2, eid="shared-1")
    hq.push_raw(a, *body(form, a, 1, [shared]))
    r = hq.push_raw(b, *body(form, b, 1, [earn("M2", 1), earn("M2", 1), shared, earn("M2", 1)]))
    assert (r.acked, r.inserted, r.duplicates) == (4, 3, 1)
    assert hq.store.balances() == {"M1": 2, "M2": 3}


@pytest.mark.parametrize(("override", "error"), [
    ({"e4_terminal": "S9-T9"}, AuthFailed),
    ({"e4_stamps": "x"}, BadBatch),
    ({"e5_seq": 99}, BadBatch),
])
def test_a_bad_event_in_a_later_chunk_stores_nothing(hq: Hq, form: str, override: dict[str, object],
                                                      error: type[Exception]) -> None:
    t = enrol(hq, "S1")
    with pytest.raises(error):
        hq.push_raw(t, *body(form, t, 1, [earn("M1", 1) for _ in range(6)], tip=False, **override))
    assert hq.stats()["events"] == 0 and hq.store.balances() == {}
    assert hq.store.terminal(t.id).acked == 0  # type: ignore[union-attr]
    assert hq.push_raw(t, *body(form, t, 1, [earn("M1", 1) for _ in range(6)])).acked == 6


def test_a_wrong_tip_stores_nothing(hq: Hq, form: str) -> None:
    t = enrol(hq, "S1")
    with pytest.raises(BadBatch, match="ledger"):
        hq.push_raw(t, *body(form, t, 1, [earn("M1", 1) for _ in range(5)], tip="0" * 64))
    assert hq.stats()["events"] == 0 and hq.store.terminal(t.id).acked == 0  # type: ignore[union-attr]


def test_a_resend_with_other_content_is_quarantined(hq: Hq, form: str) -> None:
    t = enrol(hq, "S1")
    evs = [earn("M1", 1) for _ in range(5)]
    hq.push_raw(t, *body(form, t, 1, evs))
    changed = [*evs[:3], earn("M1", 7), evs[4], earn("M1", 1)]
    with pytest.raises(QuarantineError):
        hq.push_raw(t, *body(form, t, 1, changed, tip=False))
    assert [q["seq"] for q in hq.store.quarantine()] == [4, 5]  # the chain differs from seq 4 on
    assert hq.store.balances() == {"M1": 5}


def test_an_event_breaking_the_rules_in_a_later_chunk_is_quarantined_and_the_rest_taken(hq: Hq, form: str) -> None:
    t = enrol(hq, "S1")
    evs = [earn("M1", 1) for _ in range(6)]
    r = hq.push_raw(t, *body(form, t, 1, evs, tip=False, e4_ref="R\x00X"))
    assert (r.acked, r.inserted, r.refused) == (6, 5, 1)
    assert hq.store.balances() == {"M1": 5}
    [q] = hq.store.quarantine()
    assert q["seq"] == 5 and "U+0000" in q["received"]["refused"]
    assert [(a["kind"], a["detail"]["seq"]) for a in hq.store.alerts()] == [("refused_event", 5)]
    again = hq.push_raw(t, *body(form, t, 1, evs, tip=False, e4_ref="R\x00X"))  # a resend: duplicates
    assert (again.acked, again.inserted, again.duplicates) == (6, 0, 6)
    assert hq.push_raw(t, *body(form, t, 7, [earn("M1", 1)], tip=False)).acked == 7


def test_the_read_model_folded_chunk_by_chunk_equals_a_rebuild(hq: Hq, form: str) -> None:
    """PostgreSQL folds each chunk for the read model in the decode thread (under the program
    of the batch before): sales, refunds, consents, badges and tiers come out as a rebuild's."""
    from tillstamp.loyalty import events as ev

    from .test_crm_read_model import refund_event, sale_event

    t = enrol(hq, "S1")
    seq, prev = 1, ""
    for round_ in range(3):  # the first batch of a process has no program read yet; the others do
        evs = [earn("M1", 3), sale_event(f"R{round_}", "M1", [("KOPI", 2, 20000, "COFFEE"), ("ROTI", 1, 5000, None)]),
               earn("M2", 40), Event(f"en{round_}", ev.ENROLLED, T0, "M3", 0, None, {"consent": {"email": True}}),
               Event(f"mi{round_}", ev.MISSION, T0, "M2", 2, None, {"badge": f"b{round_}"}),
               refund_event(f"R{round_}", "M1", {"KOPI": 1}, 20000), earn("M1", -1), earn("M3", 5)]
        raw, kind = body(form, t, seq, evs, prev=prev)
        placed = [e.with_position(seq=seq + i, terminal=t.id, store=t.store) for i, e in enumerate(evs)]
        for e in placed:
            prev = content_hash(e, prev)
        assert hq.push_raw(t, raw, kind).inserted == len(evs)
        seq += len(evs)
    report = hq.store.verify_crm()
    assert report.ok, report.to_dict()
    m2 = hq.store.crm_member(member="M2")
    assert m2 is not None and (m2["badges"], m2["balance"]) == ('["b0","b1","b2"]', 126)
    assert hq.store.crm_member(member="M3")["consent_email"] == 1  # type: ignore[index]
