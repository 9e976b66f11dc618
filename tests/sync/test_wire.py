"""The wire fast path: ledger rows to JSON on the till, one typed check per event at HQ, and
one digest both ends agree on (the till's ledger hash chain)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, canonical, content_hash
from tillstamp.sync import errors
from tillstamp.sync import protocol as p
from tillstamp.sync.wire import LedgerRow, WireError, chain, decode_event, decode_push, event_json

from .conftest import T0, HqHarness, sale

text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
bodies = st.dictionaries(text, st.one_of(st.integers(-10**12, 10**12), text, st.booleans(), st.none(),
                                         st.lists(st.integers(), max_size=3)), max_size=4)


def row_of(e: Event, prev: str) -> LedgerRow:
    w = e.to_wire()
    return LedgerRow(e.seq, e.id, e.kind, e.member, w["at"], e.stamps, e.ref, canonical(e.body).decode(),
                     e.terminal, e.store, content_hash(e, prev))


@given(eid=st.text(min_size=1, max_size=64),
       member=st.one_of(st.none(), text), ref=st.one_of(st.none(), text), stamps=st.integers(-999, 999),
       body=bodies, seconds=st.integers(0, 10**8))
def test_the_wire_and_the_digest_match_the_event_model(eid: str, member: str | None, ref: str | None, stamps: int,
                                                       body: dict[str, object], seconds: int) -> None:
    try:
        eid.encode()
    except UnicodeEncodeError:
        return  # a lone surrogate cannot be stored anyway
    e = Event(eid, ev.EARNED, T0 + dt.timedelta(seconds=seconds, microseconds=seconds % 7), member, stamps, ref,
              body).with_position(seq=7, terminal="S1-T1", store="S1")
    r = row_of(e, "ab" * 32)
    assert json.loads(event_json(r)) == json.loads(json.dumps(e.to_wire()))
    got = decode_event(json.loads(event_json(r)))
    assert chain("ab" * 32, [got.content]) == [r.hash]  # HQ's digest is the till's ledger hash
    assert got.body == canonical(e.body).decode()


@pytest.mark.parametrize(("change", "message"), [
    ({"seq": 0}, "seq"), ({"seq": "1"}, "seq"), ({"stamps": True}, "stamps"), ({"id": ""}, "id"),
    ({"member": 5}, "member"), ({"body": []}, "body"), ({"kind": "nope"}, "unknown kind"),
    ({"at": "2026-03-02T03:00:00"}, "UTC offset"), ({"extra": 1}, "unknown fields"),
])
def test_a_bad_event_is_refused_with_the_reason(change: dict[str, object], message: str) -> None:
    e = Event("E1", ev.EARNED, T0, "M1", 1, None, {}).with_position(seq=1, terminal="T", store="S").to_wire()
    with pytest.raises(WireError, match=message):
        decode_event({**e, **change})


def test_envelope_is_checked() -> None:
    for raw, message in ((b"[]", "object"), (b'{"events": []}', "events"), (b"{", "JSON"),
                         (b'{"events": [{}], "hash": 5}', "hash")):
        with pytest.raises(WireError, match=message):
            decode_push(raw)


def test_a_batch_that_does_not_chain_to_the_tills_hash_is_refused_and_stores_nothing(hq: HqHarness,
                                                                                   tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("R1", m.id))
    t = hq.hq.store.terminal(a.till.config.terminal)
    assert t is not None
    wires = [e.to_wire() for e in a.till.store.events()]
    with pytest.raises(Exception, match="ledger"):
        hq.hq.push(t, p.PushRequest(events=[p.WireEvent(**w) for w in wires], hash="0" * 64))
    assert hq.hq.stats()["events"] == 0
    assert a.client.push().acked == a.till.store.last_seq  # the real till's hashes chain
    held = [r[0] for r in hq.hq.store.conn.execute(  # type: ignore[attr-defined]
        "SELECT digest FROM positions ORDER BY seq").fetchall()]
    assert held == [r["hash"] for r in a.till.store.iter_rows()]


def test_a_batch_with_a_tampered_event_is_parked_not_stored(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("R1", m.id))
    real = a.client._batch

    def tampered(after: int):  # type: ignore[no-untyped-def]
        b = real(after)
        if b is None:
            return None
        import gzip
        raw = gzip.decompress(b.body).replace(b'"stamps":0', b'"stamps":9', 1)
        return type(b)(gzip.compress(raw), b.first, b.last)

    a.client._batch = tampered  # type: ignore[method-assign]
    with pytest.raises(errors.BadRequest):
        a.client.push()
    assert hq.hq.stats()["events"] == 0 and a.till.sync is not None and a.till.sync.parked() is not None


def test_the_outbox_streams_committed_rows_only(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    sync = a.till.sync
    assert sync is not None
    with a.till.store.write():  # a transaction still open on the till's connection
        a.service.record_sale(sale("R1", m.id))
        assert list(sync.ledger_rows(0, 100))[-1].seq < a.till.store.last_seq
    assert [r.seq for r in sync.ledger_rows(0, 100)] == list(range(1, a.till.store.last_seq + 1))
