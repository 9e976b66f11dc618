"""Property tests: random, truncated and re-chunked streams never crash, hang or get altered."""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.drivers.escpos_decode import decode
from tillstamp.tap import framing
from tillstamp.tap.framing import Framer, Mark
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


def run_session(chunks: list[bytes], record: Any, gaps: bool = False,
                stall: float = 30.0) -> tuple[bytes, list[JobReport]]:
    printer = MemoryPrinter()
    reports: list[JobReport] = []
    handler = ReceiptHandler(TEMPLATES, record, width=32, record_timeout=2.0)
    session = Session(ScriptedPos(chunks, gaps), lambda: printer, handler,
                      on_job=lambda r, raw, out: reports.append(r), new_job_id=lambda: "j",
                      stop=threading.Event(), settings=SessionSettings(cut_idle=0, idle=0, stall=stall))
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
def test_decoder_never_raises_and_framer_agrees_on_cuts(shared_data, data):
    doc = decode(data)
    fr = Framer()
    safe, marks = fr.feed(data)
    assert safe <= len(data)
    assert [m.offset for m in marks if m.kind == "cut"] == [c.offset for c in doc.cuts]


@settings(max_examples=200, deadline=None)
@given(STREAMS, st.lists(st.integers(0, 10_000), max_size=8))
def test_framer_is_the_same_whatever_the_chunking(shared_data, data, points):
    whole = Framer().feed(data)[1]
    fr, got = Framer(), []
    for part in chunked(data, points):
        got += fr.feed(part)[1]
    assert [(m.kind, m.offset) for m in got] == [(m.kind, m.offset) for m in whole]


@settings(max_examples=150, deadline=None)
@given(STREAMS, st.lists(st.integers(0, 10_000), max_size=6), st.booleans())
def test_tap_forwards_random_streams_unchanged(shared_data, data, points, gaps):
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


# -- the two walkers ---------------------------------------------------------------------
# Streams built from whole commands, as a POS sends them: text and line ends, the style
# commands the framer remembers (with any argument, lead bytes included), feeds, images and
# codes whose data is full of bytes that look like cuts and status queries, real cuts,
# status queries, resets, and now and then a stray byte that shifts everything after it.
LOOKALIKES = st.sampled_from([b"\x1dV\x00", b"\x1dVA\x03", b"\x1bi", b"\x1bm", b"\x10\x04\x01",
                              b"\x1dr\x01", b"\x1da\x01", b"\x1b@", b"\x1bE\x01"])
DATA = st.lists(st.one_of(LOOKALIKES, st.binary(max_size=6)), max_size=12).map(b"".join)


def _raster(body: bytes) -> bytes:
    return b"\x1dv0\x00" + len(body).to_bytes(2, "little") + b"\x01\x00" + body


def _column(body: bytes) -> bytes:
    return b"\x1b*\x00" + len(body).to_bytes(2, "little") + body


def _qr(body: bytes) -> bytes:
    return b"\x1d(k" + (len(body) + 3).to_bytes(2, "little") + b"1P0" + body


PIECE = st.one_of(
    st.text("abc XYZ-.:0123456789", min_size=1, max_size=40).map(str.encode),
    st.just(b"\n"), st.just(b"\r\n"), st.just(b"\t"),
    st.builds(lambda c, n: b"\x1b" + c + bytes([n]), st.sampled_from([b"!", b"E", b"-", b"a", b"t", b"d", b"J"]),
              st.integers(0, 255)),
    st.builds(lambda n: b"\x1d!" + bytes([n]), st.integers(0, 255)),
    st.sampled_from([b"\x1b@", b"\x1dV\x00", b"\x1dVB\x05", b"\x1bi", b"\x1bm", b"\x10\x04\x01",
                     b"\x1dr\x01", b"\x1da\x00", b"\x1bp\x00\x19\xfa", b"\x1b3\x1b", b"\x1b\x1b"]),
    st.builds(_raster, DATA), st.builds(_column, DATA), st.builds(_qr, DATA),
    st.binary(min_size=1, max_size=3),
)
COMMANDS = st.lists(PIECE, max_size=120).map(b"".join)
RECEIPTS = st.builds(lambda a, b: a + SAMPLE.read_bytes() + b, COMMANDS, COMMANDS)


def frame(data: bytes, chunks: list[bytes], stretch_min: int) -> tuple[list[Mark], list[int], tuple]:
    fr, marks, safe = Framer(stretch_min=stretch_min), [], []
    for part in chunks:
        s, m = fr.feed(part)
        marks += m
        safe.append(s)
    end = (fr.state, fr.mid_line, fr.text_since_cut, fr.text_bytes, fr.last_text >= 0)
    return marks, safe, end


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(COMMANDS, RECEIPTS, STREAMS), st.lists(st.integers(0, 20_000), max_size=8))
def test_stretch_walker_gives_what_the_exact_walker_gives(shared_data, data, points):
    chunks = chunked(data, points)
    exact = frame(data, chunks, stretch_min=1 << 40)  # one command at a time
    assert frame(data, chunks, stretch_min=0) == exact  # numpy stretches wherever it can
    assert frame(data, chunks, stretch_min=64) == exact  # both, with back-off in between
    whole = frame(data, [data], stretch_min=0)
    assert [(m.kind, m.offset, m.data) for m in whole[0]] == [(m.kind, m.offset, m.data) for m in exact[0]]
    assert whole[2][:3] == exact[2][:3]  # state, line and text flags do not depend on chunking
    assert [m.offset for m in exact[0] if m.kind == "cut"] == [c.offset for c in decode(data).cuts]


@settings(max_examples=150, deadline=None)
@given(st.lists(DATA, min_size=1, max_size=40), st.lists(st.integers(0, 50_000), max_size=8))
def test_cut_bytes_inside_image_and_code_data_are_never_a_cut(bodies, points):
    # Images and QR payloads made of cut commands, status queries and resets, then one cut.
    data = b"\x1b@Logo\n" + b"".join(w(b) for b in bodies for w in (_raster, _column, _qr)) \
        + b"Thanks\n\x1dV\x00"
    for stretch_min in (0, 1 << 40):
        marks = frame(data, chunked(data, points), stretch_min)[0]
        assert [(m.kind, m.offset) for m in marks] == [("cut", len(data) - 3)]


@settings(max_examples=100, deadline=None)
@given(st.one_of(COMMANDS, RECEIPTS), st.lists(st.integers(0, 20_000), max_size=6), st.booleans())
def test_tap_forwards_command_streams_unchanged(shared_data, data, points, gaps):
    printed, reports = run_session(chunked(data, points), claim, gaps)
    if not any(r.inserted for r in reports):
        assert printed == data
    else:  # the sample's receipt read: its block went in before its cut, nothing else changed
        cut = next(m.offset for m in frame(data, [data], 0)[0]
                   if m.kind == "cut" and m.offset >= data.find(SAMPLE.read_bytes()))
        assert printed.startswith(data[:cut]) and printed.endswith(data[cut:])


def test_big_jobs_take_the_stretch_walker_and_match_the_exact_one():
    line = b"\x1bE\x01Kopi Gayo 250 g\x1bE\x00      12 x 85.000     1.020.000\n"
    image = _raster(b"\x1dV\x00\x1bi" * 13_000)
    data = b"\x1b@\x1ba\x01" + line * 5_000 + image + b"\x1b!\x10" + line * 5_000 + b"\x1dV\x00"
    chunks = chunked(data, list(range(0, len(data), 65_536)))
    marks = frame(data, chunks, stretch_min=Framer.stretch_min)[0]
    assert frame(data, chunks, stretch_min=1 << 40)[0] == marks
    (cut,) = marks
    assert cut.offset == len(data) - 3 and not cut.mid_line
    assert cut.state == (b"\x1ba\x01", b"\x1b!\x10", b"\x1bE\x00")  # in the order last sent
    assert cut.text == 10_000 * (len(line) - 6)  # text and line ends, not commands


def test_stretch_lengths_are_the_exact_walkers():
    rnd = random.Random(5)
    for code in np.flatnonzero(framing._LENGTHS):
        lead, c = divmod(int(code), 256)
        for _ in range(20):
            args = bytes(rnd.randrange(256) for _ in range(16))
            assert framing.measure(bytes([lead, c]) + args, 0) == framing._LENGTHS[code], hex(code)


@pytest.mark.parametrize("split", [1, 2])
def test_a_pause_inside_a_cut_does_not_end_the_job_there(shared_data, split):
    # The POS writes GS | V 0 with a pause between: the job may not end mid-command, or the
    # rest of the cut would open the next job and the sample's block would land before it.
    data = b"\x1dV\x00" + SAMPLE.read_bytes()
    printed, reports = run_session(chunked(data, [split]), claim, gaps=True)
    cut = next(m.offset for m in frame(data, [data], 0)[0] if m.kind == "cut" and m.offset >= 3)
    assert any(r.inserted for r in reports)
    assert printed.startswith(data[:cut]) and printed.endswith(data[cut:])


def test_a_job_stalled_inside_a_command_ends_after_the_stall_and_loses_nothing(shared_data):
    # Stalled for good inside a raster image header: the job ends anyway, every byte is
    # forwarded, and the next job is framed from a clean start.
    stalled = b"\x1b@Hello\n\x1dv0"
    data = stalled + b"\x1b@" + SAMPLE.read_bytes()
    printed, reports = run_session(chunked(data, [len(stalled)]), claim, gaps=True, stall=0)
    assert len(reports) == 2 and not reports[0].inserted and reports[1].inserted
    cut = len(stalled) + 2 + next(m.offset for m in frame(SAMPLE.read_bytes(), [SAMPLE.read_bytes()], 0)[0]
                                  if m.kind == "cut")
    assert printed.startswith(data[:cut]) and printed.endswith(data[cut:])
    assert len(printed) > len(data)  # the sample's block went in, nothing was dropped
