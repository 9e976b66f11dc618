"""The print queue: durable jobs, retries with backoff, and no lost or blocked receipts."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.events import DeviceState, StateEvent
from tillstamp.drivers.spool import PrintQueue, Spool

from .conftest import PAPER_OK, PAPER_OUT, FakePrinter, free_port_url

JOB = b"\x1b@Struk A-0042\nTotal Rp 43.000\n\x1dV\x00"


class Recorder:
    """Collects state events and the delays the queue asked to sleep."""

    def __init__(self) -> None:
        self.states: list[StateEvent] = []
        self.delays: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(0.01)  # keep the real wait tiny; the asked-for delay is what we check

    def wait_for(self, predicate, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return False


def test_spool_writes_atomically_and_keeps_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.add("r-1", b"one") and spool.add("r-2", b"two")
    assert not spool.add("r-1", b"again")  # same receipt queued twice prints once
    assert spool.pending() == ["r-1", "r-2"]
    assert list((tmp_path / "tmp").iterdir()) == []
    oldest = spool.oldest()
    assert oldest is not None and oldest.read_bytes() == b"one"
    spool.done(oldest)
    assert spool.pending() == ["r-2"]


def test_prints_and_empties_the_spool(tmp_path: Path, fake_printer: FakePrinter) -> None:
    rec = Recorder()
    with PrintQueue(tmp_path, fake_printer.url, on_state=rec.states.append, sleep=rec.sleep) as q:
        q.submit("a-1", JOB)
        q.submit("a-2", JOB.replace(b"A-0042", b"A-0043"))
        assert q.flush(5)
        assert q.pending() == []
    text = decode(fake_printer.take()).text
    assert text == ["Struk A-0042", "Total Rp 43.000", "Struk A-0043", "Total Rp 43.000"]
    assert rec.states[0].state == DeviceState.OPEN


def test_paper_out_waits_then_prints_once(tmp_path: Path, fake_printer: FakePrinter) -> None:
    rec = Recorder()
    fake_printer.paper = PAPER_OUT
    with PrintQueue(tmp_path, fake_printer.url, on_state=rec.states.append, sleep=rec.sleep,
                    initial_wait=0.5, max_wait=4) as q:
        q.submit("b-1", JOB)
        assert rec.wait_for(lambda: len(rec.delays) >= 5)
        assert q.pending() == ["b-1"] and fake_printer.take() == b""
        assert any(s.state == DeviceState.RETRYING and "out of paper" in s.detail
                   for s in rec.states)
        fake_printer.paper = PAPER_OK
        assert q.flush(5)
    assert fake_printer.take() == JOB
    # exponential backoff with jitter, capped
    assert rec.delays[3] > rec.delays[0] and max(rec.delays) <= 4 + 0.5


def test_offline_printer_never_blocks_submit(tmp_path: Path, fake_printer: FakePrinter) -> None:
    rec = Recorder()
    fake_printer.online = False
    with PrintQueue(tmp_path, fake_printer.url, on_state=rec.states.append, sleep=rec.sleep) as q:
        start = time.monotonic()
        for i in range(20):
            q.submit(f"c-{i}", JOB)
        assert time.monotonic() - start < 1.0
        assert not q.flush(0.3)
        assert len(q.pending()) == 20
        assert any("offline" in s.detail for s in rec.states)
        fake_printer.online = True
        assert q.flush(10)
    assert fake_printer.take() == JOB * 20


def test_unplugged_mid_job_reprints_whole_job(tmp_path: Path, fake_printer: FakePrinter) -> None:
    rec = Recorder()
    big = b"\x1b@" + b"Baris struk panjang\n" * 200 + b"\x1dV\x00"
    fake_printer.drop_after = 500
    with PrintQueue(tmp_path, fake_printer.url, sleep=rec.sleep) as q:
        q.submit("d-1", big)
        assert q.flush(10)
    got = fake_printer.take()
    assert got.endswith(big) and len(got) < 2 * len(big)  # at least once, never lost
    assert fake_printer.connections >= 2


def test_jobs_survive_a_restart(tmp_path: Path) -> None:
    rec = Recorder()
    down = PrintQueue(tmp_path / "spool", free_port_url(), sleep=rec.sleep)
    down.submit("e-1", JOB)
    assert rec.wait_for(lambda: len(rec.delays) >= 2)
    down.close()
    assert Spool(tmp_path / "spool").pending() == ["e-1"]
    out = tmp_path / "printer.bin"
    with PrintQueue(tmp_path / "spool", f"file://{out}") as up:
        assert up.flush(5)
    assert out.read_bytes() == JOB


def test_bad_printer_url_fails_and_keeps_the_job(tmp_path: Path) -> None:
    rec = Recorder()
    failed = threading.Event()

    def on_state(e: StateEvent) -> None:
        rec.states.append(e)
        if e.state == DeviceState.FAILED:
            failed.set()

    with PrintQueue(tmp_path, "escpos+tcp://", on_state=on_state, sleep=rec.sleep) as q:
        q.submit("f-1", JOB)
        assert failed.wait(5)
        assert q.pending() == ["f-1"]
    assert "needs a host" in next(s.detail for s in rec.states if s.state == DeviceState.FAILED)


def test_close_interrupts_backoff_quickly(tmp_path: Path) -> None:
    q = PrintQueue(tmp_path, free_port_url(), initial_wait=30, max_wait=60)
    q.submit("g-1", JOB)
    time.sleep(0.2)
    start = time.monotonic()
    q.close()
    assert time.monotonic() - start < 2.0
    assert q.pending() == ["g-1"]
