"""Property tests: random, truncated and re-chunked streams never crash, hang or get altered."""

from __future__ import annotations

import itertools
import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.drivers.escpos_decode import decode
from tillstamp.tap.framing import Framer
from tillstamp.tap.handler import ReceiptHandler
from tillstamp.tap.jobs import JobReport
from tillstamp.tap.session import Session, SessionSettings
from tillstamp.tap.template import shipped_templates

from .conftest import SAMPLE, struk

TEMPLATES = shipped_templates()
# Bytes that start commands, so random streams are mostly commands rather than text.
COMMANDY = st.lists(st.one_of(st.sampled_from([0x10, 0x1B, 0x1C, 0x1D, 0x0A, 0x56, 0x00, 0x04, 0x28,
                                               0x6B, 0x76, 0x30, 0x61, 0x74, 0x69]),
                              st.integers(0, 255)), max_size=300).map(bytes)
STREAMS = st.one_of(st.binary(max_size=400), COMMANDY,
                    st.builds(lambda n: SAMPLE.read_bytes()[:n], st.integers(0, 9579)))


class ScriptedPos:
    """A POS pipe that hands out fixed chunks, then closes."""

    duplex = True

    def __init__(self, chunks: list[bytes], gaps: bool = False) -> None:
        # With gaps, silence (None) comes between chunks: every one ends a job (idle = 0).
        self.chunks: list[bytes | None] = [x for c in chunks for x in ((None, c) if gaps else (c,))]
        self.back = bytearray()

    def recv(self, timeout: float) -> bytes | None:
        return self.chunks.pop(0) if self.chunks else b""

    def send(self, data: bytes) -> None:
        self.back += data

    def close(self) -> None:
        pass


class MemoryPrinter:
    """A printer pipe that keeps what it gets and never answers."""

    duplex = False

    def __init__(self) -> None:
        self.got = bytearray()

    def send(self, data: bytes) -> None:
        self.got += data

    def recv(self, timeout: float) -> bytes | None:
        return None

    def close(self) -> None:
        pass


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def run_session(chunks: list[bytes], record: Any, gaps: bool = False) -> tuple[bytes, list[JobReport]]:
    printer = MemoryPrinter()
    reports: list[JobReport] = []
    handler = ReceiptHandler(TEMPLATES, record, width=32, record_timeout=2.0)
    session = Session(ScriptedPos(chunks, gaps), lambda: printer, handler,
                      on_job=lambda r, raw, out: reports.append(r), new_job_id=lambda: "j",
                      stop=threading.Event(), settings=SessionSettings(cut_idle=0, idle=0))
    try:
        session.run()
    finally:
        handler.stop()
    return bytes(printer.got), reports


def claim(sale: dict[str, Any]) -> dict[str, Any]:
    return {"receipt": sale["receipt"], "member": None, "stamps_awarded": 0, "balance": None,
            "duplicate": False, "claim": "TS1CLAIMFOR" + sale["receipt"], "claim_stamps": 2}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS)
def test_decoder_never_raises_and_framer_agrees_on_cuts(data):
    doc = decode(data)
    fr = Framer()
    safe, marks = fr.feed(data)
    assert safe <= len(data)
    assert [m.offset for m in marks if m.kind == "cut"] == [c.offset for c in doc.cuts]


@settings(max_examples=200, deadline=None)
@given(STREAMS, st.lists(st.integers(0, 10_000), max_size=8))
def test_framer_is_the_same_whatever_the_chunking(data, points):
    whole = Framer().feed(data)[1]
    fr, got = Framer(), []
    for part in chunked(data, points):
        got += fr.feed(part)[1]
    assert [(m.kind, m.offset) for m in got] == [(m.kind, m.offset) for m in whole]


@settings(max_examples=150, deadline=None)
@given(STREAMS, st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_tap_forwards_random_streams_unchanged(data, points, gaps):
    printed, reports = run_session(chunked(data, points), claim, gaps)
    inserted = [r for r in reports if r.inserted]
    if not inserted:
        assert printed == data
    else:  # a truncated sample that still shows its total: read, and its block appended
        assert all(r.template == "escpos-tools-sample" for r in inserted)
        assert printed.startswith(data[: len(data) // 2])


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=120), st.integers(1, 9), st.lists(st.integers(0, 10_000), max_size=6),
       st.booleans())
def test_tap_inserts_only_the_block_into_receipts(junk, qty, points, truncate):
    receipt = struk(items=(("Kopi", qty, 12500),), pay=("TUNAI", 200000))
    data = junk.replace(b"\x1d", b"").replace(b"\x1b", b"").replace(b"\x10", b"").replace(b"\x1c", b"") \
        + receipt
    if truncate:
        data = data[: len(data) - 2]  # the cut command cut short: no cut, the block goes last
    printed, reports = run_session(chunked(data, points), claim)
    p = 0
    while p < min(len(data), len(printed)) and data[p] == printed[p]:
        p += 1
    assert printed.endswith(data[p:])
    block = printed[p : len(printed) - (len(data) - p)]
    if reports and reports[0].inserted:
        assert decode(block).qr == [reports[0].claim]
    else:
        assert block == b""
