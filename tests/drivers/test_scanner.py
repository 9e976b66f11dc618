"""Serial scanners: the pure framer, and real ports (loop://, pty pairs, socket://, stdin)."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tillstamp.drivers.backoff import Backoff
from tillstamp.drivers.events import DeviceState, ScanEvent, StateEvent
from tillstamp.drivers.reader import DeviceReader
from tillstamp.drivers.scanner import (
    EndOfInput,
    Framer,
    StdinScanner,
    _ScannerSession,
    open_scanner,
    scanner_reader,
    scanner_settings,
)


def test_framer_splits_chunks_on_suffix() -> None:
    f = Framer(suffix=b"\r\n")
    assert f.feed(b"TS1A") == []
    assert f.feed(b"BC\r") == []
    assert f.feed(b"\nTS1DEF\r\nTS1G") == ["TS1ABC", "TS1DEF"]
    assert f.feed(b"\r\n") == ["TS1G"]


def test_framer_prefix_drops_noise(caplog: pytest.LogCaptureFixture) -> None:
    f = Framer(prefix=b"\x02", suffix=b"\x03")
    with caplog.at_level(logging.WARNING):
        assert f.feed(b"junk\x03\x02hello\x03noise\x02world\x03") == ["hello", "world"]
    assert "without prefix" in caplog.text


def test_framer_drops_bad_utf8_and_overlong(caplog: pytest.LogCaptureFixture) -> None:
    f = Framer(suffix=b"\r")
    with caplog.at_level(logging.WARNING):
        assert f.feed(b"\xff\xfe\xfd\rok\r") == ["ok"]
        assert f.feed(b"A" * 5000) == []
        assert f.feed(b"tail of the long one\rnext\r") == ["next"]
    assert "not UTF-8" in caplog.text and "longer than 4096" in caplog.text


def test_framer_accepts_utf8_payloads() -> None:
    assert Framer(suffix=b"\t").feed("José\t".encode()) == ["José"]


@given(st.lists(st.binary(max_size=600), max_size=30))
def test_framer_never_crashes_and_bounds_memory(chunks: list[bytes]) -> None:
    f = Framer(suffix=b"\r")
    for chunk in chunks:
        for payload in f.feed(chunk):
            assert "\r" not in payload and len(payload.encode()) <= 4096
        assert len(f._buf) <= 4096


@pytest.mark.parametrize(("url", "port", "baud", "suffix"), [
    ("serial:///dev/ttyUSB0?baudrate=19200&suffix=CRLF", "/dev/ttyUSB0", 19200, b"\r\n"),
    ("/dev/ttyACM0", "/dev/ttyACM0", 9600, b"\r"),
    ("loop://", "loop://", 9600, b"\r"),
    ("socket://127.0.0.1:7000", "socket://127.0.0.1:7000", 9600, b"\r"),
    ("stdin://", "stdin", 9600, b"\n"),
])
def test_scanner_urls(url: str, port: str, baud: int, suffix: bytes) -> None:
    s = scanner_settings(url)
    assert (s.port, s.baudrate, s.suffix) == (port, baud, suffix)


def test_loop_port_round_trip() -> None:
    with_port = open_scanner("loop://", timeout=0.05)
    try:
        with_port._ser.write(b"TS1LOOP\r")  # type: ignore[union-attr]
        f = Framer()
        got: list[str] = []
        for _ in range(10):
            got += f.feed(with_port.read())
            if got:
                break
        assert got == ["TS1LOOP"]
    finally:
        with_port.close()


def _collect() -> tuple[queue.Queue[ScanEvent], list[StateEvent]]:
    return queue.Queue(), []


def test_pty_unplug_is_reported_and_replug_reopens(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"
    master, slave = os.openpty()
    link.symlink_to(os.ttyname(slave))
    scans, states = _collect()
    changed = threading.Condition()

    def on_state(e: StateEvent) -> None:
        with changed:
            states.append(e)
            changed.notify_all()

    reader = scanner_reader(str(link), scans.put, on_state=on_state, timeout=0.05,
                            backoff=Backoff(initial=0.02, maximum=0.1))
    with reader:
        with changed:
            assert changed.wait_for(lambda: any(s.state == DeviceState.OPEN for s in states), 5)
        os.write(master, b"TS1FIRST\r")
        first = scans.get(timeout=5)
        assert (first.payload, first.source) == ("TS1FIRST", str(link))
        assert first.at.tzinfo is not None
        os.close(master)  # the cable is pulled
        os.close(slave)
        with changed:
            assert changed.wait_for(lambda: any(s.state == DeviceState.LOST for s in states), 5)
            assert changed.wait_for(
                lambda: any(s.state == DeviceState.RETRYING for s in states), 5)
        lost = next(s for s in states if s.state == DeviceState.LOST)
        assert "returned no data" in lost.detail or "Input/output" in lost.detail
        master2, slave2 = os.openpty()  # plugged back in, under a new pty
        link.unlink()
        link.symlink_to(os.ttyname(slave2))
        with changed:
            n_open = sum(s.state == DeviceState.OPEN for s in states)
            assert changed.wait_for(
                lambda: sum(s.state == DeviceState.OPEN for s in states) > n_open, 5)
        os.write(master2, b"TS1SECOND\r")
        assert scans.get(timeout=5).payload == "TS1SECOND"
    os.close(master2)
    os.close(slave2)
    assert states[-1].state == DeviceState.CLOSED


def test_socket_scanner() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    scans: queue.Queue[ScanEvent] = queue.Queue()
    opened = threading.Event()

    def on_state(e: StateEvent) -> None:
        if e.state == DeviceState.OPEN:
            opened.set()

    with scanner_reader(f"socket://127.0.0.1:{port}", scans.put, on_state=on_state, suffix="LF"):
        conn, _ = server.accept()
        assert opened.wait(5)  # pyserial flushes the socket's input while it opens
        conn.sendall(b"TS1NET1\nTS1NET2\n")
        assert [scans.get(timeout=5).payload for _ in range(2)] == ["TS1NET1", "TS1NET2"]
        conn.close()
    server.close()


def test_stdin_keyboard_wedge() -> None:
    read_fd, write_fd = os.pipe()
    scanner = StdinScanner(scanner_settings("stdin://", timeout=0.05), fd=read_fd)
    os.write(write_fd, b"TS1KEYS\n")
    f = Framer(suffix=b"\n")
    assert f.feed(scanner.read()) == ["TS1KEYS"]
    assert scanner.read() == b""  # nothing typed: the poll times out
    os.close(write_fd)
    with pytest.raises(EndOfInput, match="stdin ended"):  # finished, not lost: no reopening
        scanner.read()
    os.close(read_fd)


def test_stdin_reader_ends_at_end_of_input_with_the_last_scan() -> None:
    # `printf '0812...\r' | tillstamp scan listen stdin://` used to reopen stdin forever.
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"TS1ONE\nTS1TWO\r")  # the last scan ends with CR, not the LF suffix
    os.close(write_fd)
    states: list[StateEvent] = []
    scans: list[str] = []
    settings = scanner_settings("stdin://", timeout=0.05)
    reader = DeviceReader("stdin://", lambda: _ScannerSession(StdinScanner(settings, fd=read_fd),
                                                             Framer(suffix=b"\n")),
                          lambda e: scans.append(e.payload), on_state=states.append)
    reader.start()
    reader.join(10)
    os.close(read_fd)
    assert not reader.alive and scans == ["TS1ONE", "TS1TWO"]
    assert [s.state for s in states] == [DeviceState.OPENING, DeviceState.OPEN, DeviceState.CLOSED]
