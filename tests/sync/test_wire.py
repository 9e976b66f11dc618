"""The wire fast path: ledger rows to JSON on the till, one typed check per event at HQ, and
one digest both ends agree on (the till's ledger hash chain)."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, canonical, content_hash
from tillstamp.sync import errors
from tillstamp.sync import protocol as p
from tillstamp.sync.wire import (
    LedgerRow,
    WireError,
    _decode_line,
    chain,
    decode_event,
    decode_events,
    decode_lines,
    decode_push,
    head_json,
    ledger_line,
    split_ledger,
)

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
    if "\x00" in f"{eid}{member}{ref}":
        return  # refused (PostgreSQL text cannot hold NUL): see test_a_bad_event_is_refused_with_the_reason
    e = Event(eid, ev.EARNED, T0 + dt.timedelta(seconds=seconds, microseconds=seconds % 7), member, stamps, ref,
              body).with_position(seq=7, terminal="S1-T1", store="S1")
    r = row_of(e, "ab" * 32)
    got = decode_event(json.loads(json.dumps(e.to_wire())))
    assert chain("ab" * 32, [got.content]) == [r.hash]  # HQ's digest is the till's ledger hash
    assert got.body == canonical(e.body).decode()


@given(eid=st.text(min_size=1, max_size=64), member=st.one_of(st.none(), text), ref=st.one_of(st.none(), text),
       stamps=st.integers(-999, 999), body=bodies, seconds=st.integers(0, 10**8))
def test_a_ledger_line_is_what_the_till_hashed_and_decodes_like_the_json_form(
        eid: str, member: str | None, ref: str | None, stamps: int, body: dict[str, object], seconds: int) -> None:
    try:
        eid.encode()
    except UnicodeEncodeError:
        return
    if "\x00" in f"{eid}{member}{ref}":
        return  # refused by both forms (PostgreSQL text cannot hold NUL)
    e = Event(eid, ev.EARNED, T0 + dt.timedelta(seconds=seconds, microseconds=seconds % 7), member, stamps, ref,
              body).with_position(seq=7, terminal="S1-T1", store="S1")
    r = row_of(e, "ab" * 32)
    line = ledger_line(r)
    assert chain("ab" * 32, [line.encode()]) == [r.hash]  # the line is exactly the hashed text
    [got] = decode_lines([line])
    assert got == decode_events([json.loads(json.dumps(e.to_wire()))])[0]  # both forms store the same
    assert got == _decode_line(line, 0)  # the fast path agrees with the general rules


def _line(**change: object) -> str:
    w = Event("E1", ev.EARNED, T0, "M1", 1, None, {"a": 1}).with_position(seq=1, terminal="T", store="S").to_wire()
    w.update(change)
    return head_json(*(w[k] for k in ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref"))) + \
        "\x1f" + json.dumps(w["body"], separators=(",", ":"))


@pytest.mark.parametrize(("line", "message"), [
    (_line().replace("\x1f", ""), "0x1F"),
    (_line().replace('"id"', ' "id"'), "canonical"),
    (_line().replace('{"at"', '{"seq":1,"at"'), "canonical"),
    (_line().replace('"seq":1', '"seq":1.0'), "seq"),
    (_line(seq=0), "seq"),
    ('{"at":1}\x1f{}', "fields"),
    ("[]\x1f{}", "object"),
])
def test_a_line_that_is_not_the_wire_format_is_refused_with_the_reason(line: str, message: str) -> None:
    assert decode_lines([_line()])[0].id == "E1"
    with pytest.raises(WireError, match=message):
        decode_lines([_line(), line], 10)
    with pytest.raises(WireError, match=r"events\[11\]"):
        decode_lines([_line(), line], 10)


@pytest.mark.parametrize(("line", "message"), [
    (_line(stamps=1_000_001), "stamps"),
    (_line(kind="nope"), "unknown kind"),
    (_line(at="2026-03-02T10:00:00+07:00"), "UTC"),
    (_line(at="2026-03-02T03:00:00.000000+00:00"), "UTC"),
    (_line(at="2026-13-02T03:00:00+00:00"), "ISO"),
    (_line(at="2026-W09-1T03:00:00+00:00"), "UTC"),
    (_line(id="a\x00b"), "U+0000"),
    (_line(ref="a\x85b"), "U+0085"),
    (_line(member="x" * 65), "member"),
    (_line(body=[1]), "object"),
    (_line() + "}", "object"),
    (_line() + "\r", "object"),  # a line ending changed to CRLF on the way
    (_line().replace('{"a":1}', '{"a":1} {}'), "object"),
    (_line().replace('{"a":1}', '{"a":}'), "object"),
])
def test_an_event_breaking_the_rules_is_decoded_with_the_reason_for_quarantine(line: str, message: str) -> None:
    good, bad = decode_lines([_line(), line], 10)
    assert good.problem is None
    assert bad.problem is not None and message in bad.problem
    assert (bad.seq, bad.terminal, bad.store, bad.content) == (1, "T", "S", line.encode())  # its place is known


@given(st.integers(0, 200), st.text(max_size=3), st.integers(0, 3))
def test_whatever_a_mangled_line_decodes_to_is_exactly_canonical(at: int, insert: str, cut: int) -> None:
    """Accepted means: the line is canonical(head) 0x1F a JSON object, and its fields are what it says."""
    good = _line(member="M\u00e9", ref='q"\\')
    at %= len(good)
    line = good[:at] + insert + good[at + cut:]
    try:
        [got] = decode_lines([line])
    except WireError:
        return
    head = head_json(got.id, got.terminal, got.store, got.seq, got.kind, got.member, got.at, got.stamps, got.ref)
    assert head + "\x1f" + got.body == line and got.content == line.encode()
    if got.problem is None:
        assert isinstance(json.loads(got.body), dict)


json_ish = st.lists(st.sampled_from(list('{}[]",:-0123456789.eE aflnrstu\\\x00\x1f\x7f\u00e9') + ["\\u0000", "NaN"]),
                    max_size=24).map("".join)
hostile_bodies = st.one_of(
    st.builds(lambda d: json.dumps(d, separators=(",", ":")), bodies),  # the usual: one object
    st.builds(lambda t: "{" + t + "}", json_ish),  # braces around anything
    st.builds(lambda d, t: json.dumps(d) + t + "}", bodies, json_ish),  # an object, then anything
    st.builds(lambda n: "{" + '"a":[' * n + "1" + "]" * n + "}", st.integers(0, 1200)),  # deep nesting
)


@given(kind=st.sampled_from([ev.EARNED, ev.SALE, ev.REDEEMED, ev.ADJUSTED]), body=hostile_bodies)
def test_the_fast_path_decodes_any_body_as_the_general_rules_do(kind: str, body: str) -> None:
    """`decode_lines` checks the usual line in one expression and the body of any kind but a
    sale inline; `_decode_line` takes every field by the general rules: both say the same."""
    line = _line(kind=kind).split("\x1f")[0] + "\x1f" + body
    try:
        want = _decode_line(line, 0)
    except WireError as e:
        with pytest.raises(WireError, match=re.escape(str(e))):
            decode_lines([line])
        return
    assert decode_lines([line]) == [want]


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "trailer"), (_line().encode(), "trailer"), (b'{"members": []}', "events"),
    (_line().encode() + b"\n[]", "trailer"), (_line().encode() + b'\n{"other": 1}', "trailer"),
    (_line().encode() + b'\n{"hash": 5}', "hash"), (b"\xff\n{}", "UTF-8"),
    (b"\n" * 20_002 + b"{}", "events"),
])
def test_a_bad_ledger_body_is_refused_with_the_reason(raw: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        split_ledger(raw)


def test_a_member_row_breaking_the_rules_is_marked_not_refused_with_the_batch() -> None:
    _, members, _ = split_ledger(_line().encode() + b'\n{"members": [{"id": "M1", "name": "a\\u0000"}, '
                                 b'{"id": "M2", "name": "Ani"}, {"id": 5}]}')
    assert members[0] == {"id": "M1", "_refused": "name: control character U+0000 is not allowed"}
    assert members[1]["name"] == "Ani" and "_refused" not in members[1]
    assert members[2]["id"] is None and "_refused" in members[2]


def test_a_ledger_body_splits_into_lines_members_and_tip() -> None:
    lines, members, tip = split_ledger((_line() + "\n" + _line() + '\n{"members": [{"id": "M1"}], "hash": "ab"}\n')
                                       .encode())
    assert lines == [_line(), _line()] and [m["id"] for m in members] == ["M1"] and tip == "ab"


@pytest.mark.parametrize(("change", "message"), [
    ({"seq": 0}, "seq"), ({"seq": "1"}, "seq"), ({"stamps": True}, "stamps"),
    ({"member": 5}, "member"), ({"body": []}, "body"), ({"extra": 1}, "unknown fields"),
])
def test_a_bad_event_is_refused_with_the_reason(change: dict[str, object], message: str) -> None:
    e = Event("E1", ev.EARNED, T0, "M1", 1, None, {}).with_position(seq=1, terminal="T", store="S").to_wire()
    with pytest.raises(WireError, match=message):
        decode_event({**e, **change})


@pytest.mark.parametrize(("change", "message"), [
    ({"id": ""}, "id"), ({"kind": "nope"}, "unknown kind"), ({"at": "2026-03-02T03:00:00"}, "UTC offset"),
    ({"ref": "a\x00"}, "U+0000"), ({"stamps": -1_000_001}, "stamps"),
])
def test_a_json_event_breaking_the_rules_is_decoded_with_the_reason(change: dict[str, object], message: str) -> None:
    e = Event("E1", ev.EARNED, T0, "M1", 1, None, {}).with_position(seq=1, terminal="T", store="S").to_wire()
    got = decode_event({**e, **change})
    assert got.problem is not None and message in got.problem


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
