"""Fixtures for the print tap: a printer simulator on loopback, Indonesian receipts, a tap."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from escpos.printer import Dummy
from support import JAKARTA, SHARED_DATA, Clock

from tillstamp.tap import TapConfig, TapServer, service_record
from tillstamp.tap.session import SessionSettings
from tillstamp.tap.template import resolve_templates

DATA = SHARED_DATA / "escpos"  # tests that read it ask for the `shared_data` fixture
SAMPLE = DATA / "escpos-tools__receipt-with-logo.bin"
ONLINE, OFFLINE = 0x12, 0x1A


@pytest.fixture
def clock() -> Clock:
    # The sample receipts are printed at 09:15 on a Monday in Jakarta; the till reads them a
    # little later (a sale more than a few minutes in the till's future is refused).
    return Clock(dt.datetime(2026, 11, 23, 9, 20, tzinfo=JAKARTA))


class PrinterSim:
    """A raw-TCP receipt printer: records every byte it gets, answers status queries.

    Answers DLE EOT n (online / offline bit), GS r n (0: paper and drawer fine) and sends a
    4-byte automatic status when GS a n enables it, like an Epson TM on port 9100.
    """

    def __init__(self, delay_answers: float = 0.0, port: int = 0) -> None:
        self.online = True
        self.delay_answers = delay_answers
        self.received = bytearray()
        self.connections = 0
        self.answered = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", port))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.url = f"escpos+tcp://127.0.0.1:{self.port}?timeout=1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _answer(self, data: bytes, i: int) -> tuple[bytes, int] | None:
        """(answer, command length) for a status command at data[i], None if incomplete."""
        if i + 2 >= len(data):
            return None
        cmd, n = data[i : i + 2], data[i + 2]
        if cmd == b"\x10\x04":
            return bytes([(ONLINE if self.online else OFFLINE) if n == 1 else 0x12]), 3
        if cmd == b"\x1dr":
            return b"\x00", 3
        if cmd == b"\x1da":
            return (b"\x10\x00\x00\x00" if n else b""), 3
        return b"", 1

    def _handle(self, conn: socket.socket) -> None:
        pending = b""
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                with self._lock:
                    self.received += chunk
                # Scanning for status commands naively (as cheap printers do) is enough here:
                # the tests put them outside image data.
                data = pending + chunk
                i, pending = 0, b""
                while True:
                    j = min((k for k in (data.find(b"\x10\x04", i), data.find(b"\x1dr", i),
                                         data.find(b"\x1da", i)) if k >= 0), default=-1)
                    if j < 0:
                        pending = data[-2:] if data[-2:] and data[-1] in (0x10, 0x1D) else b""
                        break
                    got = self._answer(data, j)
                    if got is None:
                        pending = data[j:]
                        break
                    answer, length = got
                    if answer:
                        if self.delay_answers:
                            time.sleep(self.delay_answers)  # test-only simulator, not library code
                        conn.sendall(answer)
                        self.answered += 1
                    i = j + length

    def take(self) -> bytes:
        """Everything received so far, status queries included."""
        with self._lock:
            return bytes(self.received)

    def wait_for(self, n: int, timeout: float = 5.0) -> bytes:
        """Wait until at least `n` bytes arrived; returns them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.take()
            if len(got) >= n:
                return got
            time.sleep(0.01)
        return self.take()

    def close(self) -> None:
        """Switch the printer off."""
        self._stop.set()
        self._sock.close()


@pytest.fixture
def printer() -> Iterator[PrinterSim]:
    """A running printer simulator."""
    sim = PrinterSim()
    yield sim
    sim.close()


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def struk(no: str | None = "INV-2611-0042", when: str = "23/11/2026 09:15",
          items: tuple[tuple[str, int, int], ...] = (("Es Kopi Susu Aren", 2, 25000),
                                                     ("Roti Bakar Cokelat", 1, 18000)),
          discount: int = 0, pay: tuple[str, int] = ("TUNAI", 100000), cut: bool = True,
          header: tuple[str, ...] = ("TOKO KOPI SENJA", "Jl. Kemang Raya No. 8"),
          reprint: bool = False, width: int = 32) -> bytes:
    """An Indonesian receipt as a POS prints it, drawn with python-escpos."""
    def rp(n: int) -> str:
        return f"{n:,}".replace(",", ".")

    def cols(left: str, right: str) -> str:
        return f"{left}{' ' * max(2, width - len(left) - len(right))}{right}\n"

    p = Dummy()
    p.hw("INIT")
    p.set(align="center", bold=True, double_height=True)
    p.text(header[0] + "\n")
    p.set(align="center", bold=False, normal_textsize=True)
    for line in header[1:]:
        p.text(line + "\n")
    if reprint:
        p.text("*** CETAK ULANG ***\n")
    p.set(align="left")
    p.text("-" * width + "\n")
    if no:
        p.text(f"No. Struk : {no}\n")
    p.text(f"Tanggal   : {when}\n")
    p.text("Kasir     : Siti\n")
    p.text("-" * width + "\n")
    total = 0
    for name, qty, price in items:
        total += qty * price
        if qty == 1:
            p.text(cols(name, rp(price)))
        else:
            p.text(name + "\n")
            p.text(cols(f"  {qty} x {rp(price)}", rp(qty * price)))
    if discount:
        p.text(cols("Diskon Member", "-" + rp(discount)))
        total -= discount
    p.text("-" * width + "\n")
    p.set(bold=True)
    p.text(cols("TOTAL", "Rp " + rp(total)))
    p.set(bold=False)
    p.text(cols(pay[0], "Rp " + rp(pay[1])))
    p.text(cols("KEMBALI", "Rp " + rp(pay[1] - total)))
    p.set(align="center")
    p.text("Terima kasih atas kunjungan Anda\n")
    if cut:
        p.cut()
    return bytes(p.output)


@pytest.fixture
def tap_factory(tmp_path: Path, service: Any) -> Iterator[Callable[..., tuple[TapServer, list[dict]]]]:
    """Start taps recording into the test Service; each returns (server, job reports)."""
    started: list[TapServer] = []

    def make(printer_url: str, *, record: Any = None, current_member: Any = lambda: None,
             templates: Any = None, listen: str = "tcp://127.0.0.1:0", member_used: Any = None,
             config: dict[str, Any] | None = None, **session: Any) -> tuple[TapServer, list[dict]]:
        jobs: list[dict] = []
        cfg = TapConfig(
            listen=listen, printer=printer_url, folder=tmp_path / "tap",
            templates=templates if templates is not None else resolve_templates(None),
            width=32, connect_timeout_s=0.5, **(config or {}),
            session=SessionSettings(**{"cut_idle": 0.15, "idle": 1.0, **session}))
        server = TapServer(cfg, record or service_record(service), current_member=current_member,
                           member_used=member_used, on_job=jobs.append)
        server.start()
        started.append(server)
        return server, jobs

    yield make
    for s in started:
        s.stop()


def pos_print(server: TapServer, data: bytes, *, chunk: int = 0, read_for: float = 0.0) -> bytes:
    """Print `data` to the tap as a POS does: connect, send, close; returns what came back."""
    assert server.address is not None
    got = bytearray()
    with socket.create_connection(server.address, timeout=5) as s:
        step = chunk or len(data) or 1
        for i in range(0, len(data), step):
            s.sendall(data[i : i + step])
        if read_for:
            s.settimeout(read_for)
            try:
                while part := s.recv(4096):
                    got += part
            except TimeoutError:
                pass
    return bytes(got)


def wait_jobs(jobs: list[dict], n: int, timeout: float = 5.0) -> list[dict]:
    """Wait until `n` job reports arrived."""
    deadline = time.monotonic() + timeout
    while len(jobs) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return jobs
