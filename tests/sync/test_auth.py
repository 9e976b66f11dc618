"""Every request is one terminal's: forged, replayed, skewed, other-terminal and other-store
requests are refused with 401/403, and every answer carries HQ time."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tillstamp.loyalty import tokens
from tillstamp.sync import protocol as p
from tillstamp.sync.wire import LEDGER_TYPE

from .conftest import T0, HqHarness, TillHandle, sale


def _push_body(h: TillHandle, *, terminal: str | None = None, store: str | None = None) -> bytes:
    events = [e.to_wire() for e in h.till.store.events()]
    for w in events:
        w["terminal"] = terminal or w["terminal"]
        w["store"] = store or w["store"]
    return gzip.compress(json.dumps({"events": events, "members": []}).encode())


def _send(hq: HqHarness, h: TillHandle, body: bytes, *, key: object = None, time_ms: int | None = None,
          nonce: str | None = None, terminal: str | None = None,
          content_type: str = "application/json") -> tuple[int, dict[str, object], dict[str, str]]:
    headers = p.sign_request(key or h.till.keys.terminal, terminal or h.till.config.terminal, "POST", "/v1/push",
                             body, time_ms if time_ms is not None else int(T0.timestamp() * 1000), nonce)
    reply = hq.transport.request("POST", "/v1/push", body=body,
                                 headers={**headers, "Content-Encoding": "gzip", "Content-Type": content_type})
    return reply.status, reply.json(), dict(reply.headers)


@pytest.fixture
def two(hq: HqHarness, tmp_path: Path) -> tuple[TillHandle, TillHandle]:
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("R1", m.id))
    return a, b


def test_a_signed_push_is_accepted_and_hq_time_is_in_every_answer(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    status, body, headers = _send(hq, a, _push_body(a))
    assert status == 200 and body["acked"] == 3
    assert headers[p.H_HQ_TIME.lower()] == str(int(T0.timestamp() * 1000))
    status, body, headers = _send(hq, a, _push_body(a), key=tokens.new_private_key())
    assert status == 401 and p.H_HQ_TIME.lower() in headers


def test_forged_signature_is_401(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    status, body, _ = _send(hq, a, _push_body(a), key=tokens.new_private_key())
    assert (status, body["error"]) == (401, "bad_signature")


def test_altered_body_is_401(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    body = _push_body(a)
    headers = p.sign_request(a.till.keys.terminal, a.till.config.terminal, "POST", "/v1/push", body,
                             int(T0.timestamp() * 1000))
    tampered = body[:20] + bytes([body[20] ^ 0xFF]) + body[21:]
    reply = hq.transport.request("POST", "/v1/push", body=tampered, headers=headers)
    assert reply.status == 401


def test_replayed_request_is_401(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    body = _push_body(a)
    assert _send(hq, a, body, nonce="f" * 32)[0] == 200
    status, err, _ = _send(hq, a, body, nonce="f" * 32)
    assert (status, err["error"]) == (401, "replayed")


def test_stale_or_future_request_is_401(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    for skew in (-3600_000, 3600_000):
        status, err, _ = _send(hq, a, _push_body(a), time_ms=int(T0.timestamp() * 1000) + skew)
        assert (status, err["error"]) == (401, "clock_skew")


def test_unknown_terminal_and_unsigned_are_401(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    assert _send(hq, a, _push_body(a), terminal="NOPE")[1]["error"] == "unknown_terminal"
    reply = hq.transport.request("GET", "/v1/pull?cursor=0")
    assert (reply.status, reply.json()["error"]) == (401, "unsigned")


def test_another_terminals_events_are_403(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, b = two
    status, err, _ = _send(hq, b, _push_body(a))  # b signs a's events
    assert (status, err["error"]) == (403, "other_terminal")


def test_another_stores_events_are_403(hq: HqHarness, two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    status, err, _ = _send(hq, a, _push_body(a, store="S2"))
    assert (status, err["error"]) == (403, "other_store")


def test_signature_covers_the_query_so_a_cursor_cannot_be_swapped(hq: HqHarness,
                                                                 two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    headers = p.sign_request(a.till.keys.terminal, a.till.config.terminal, "GET", "/v1/pull?cursor=0", b"",
                             int(T0.timestamp() * 1000))
    assert hq.transport.request("GET", "/v1/pull?cursor=0", headers=headers).status == 200
    headers = p.sign_request(a.till.keys.terminal, a.till.config.terminal, "GET", "/v1/pull?cursor=0", b"",
                             int(T0.timestamp() * 1000))
    assert hq.transport.request("GET", "/v1/pull?cursor=5", headers=headers).status == 401


def test_a_till_with_a_wrong_clock_still_syncs_by_signing_with_hq_time(hq: HqHarness,
                                                                      two: tuple[TillHandle, TillHandle]) -> None:
    a, _ = two
    a.clock.advance(days=1)  # the till's clock jumps a day ahead
    report = a.client.push()
    assert report.acked == 3
    assert a.till.sync is not None and round(a.till.sync.clock_offset()) == 86400


def test_openapi_lists_the_endpoints(hq: HqHarness) -> None:
    spec = hq.transport.request("GET", "/openapi.json").json()
    assert {"/v1/push", "/v1/pull", "/v1/enroll", "/v1/time"} <= spec["paths"].keys()
    assert spec["paths"]["/v1/push"]["post"]["requestBody"]["content"].keys() == {"application/json", LEDGER_TYPE}


@pytest.mark.parametrize(("mangle", "status", "error"), [
    (lambda raw: raw.replace(b'"stamps":', b'"stamps": ', 1), 400, "bad_batch"),  # not canonical
    (lambda raw: raw.replace(b"\x1f", b"", 1), 400, "bad_batch"),  # no separator
    (lambda raw: raw[:raw.rindex(b"\n")], 400, "bad_batch"),  # no trailer
    (lambda raw: raw.replace(b"}\n", b"} x\n", 1), 400, "bad_batch"),  # garbage after a body
    (lambda raw: b"\n".join(raw.split(b"\n")[i] for i in (0, 2, 3)), 400, "bad_batch"),  # a hole inside
    (lambda raw: b"\n".join(raw.split(b"\n")[1:]), 409, "gap"),  # the first event missing
])
def test_a_signed_but_malformed_ledger_body_is_refused_and_stores_nothing(
        hq: HqHarness, two: tuple[TillHandle, TillHandle], mangle: Callable[[bytes], bytes], status: int,
        error: str) -> None:
    a, _ = two
    batch = a.client._batch(0)
    assert batch is not None
    raw = gzip.decompress(batch.body)
    assert raw.count(b"\n") == 3  # three events and the trailer
    got, err, _ = _send(hq, a, gzip.compress(mangle(raw)), content_type=LEDGER_TYPE)
    assert (got, err["error"]) == (status, error), err
    assert err["expected"] == (1 if error == "gap" else None)  # a gap says where to start again
    assert hq.hq.stats()["events"] == 0
    got, body, _ = _send(hq, a, gzip.compress(raw), content_type=LEDGER_TYPE)
    assert (got, body["acked"]) == (200, 3)
