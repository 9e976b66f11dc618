"""Test kit for the agent and the POS API: real till folders, a real agent on loopback, a
loopback ESC/POS printer that can be unplugged, and a pty scanner."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import pty
import re
import socket
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from support import EXAMPLE_PROGRAM

from tillstamp.agent.config import CONFIG_NAME, load_config, render_config
from tillstamp.agent.runtime import AgentOptions, Runtime, setup
from tillstamp.agent.till import init_till
from tillstamp.pos_plugin.client import TillClient
from tillstamp.pos_plugin.server import BackgroundServer


def _steady_program() -> Path:
    """The example program without its clock-dependent bonuses (weekday happy hour, weekend
    1.5x), so the tests that count stamps give the same answer whatever day and hour they run
    on. The bonuses themselves are tested in tests/loyalty with fixed times."""
    text = EXAMPLE_PROGRAM.read_text(encoding="utf-8")
    steady, n = re.subn(r"^\[\[earn\.bonus\]\]\n(?:[^\n]+\n)*", "", text, flags=re.MULTILINE)
    assert n == 2, "the example program's bonuses changed: update the test kit"
    fd, name = tempfile.mkstemp(prefix="tillstamp-steady-", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(steady)
    atexit.register(os.unlink, name)
    return Path(name)


STEADY_PROGRAM = _steady_program()


def make_till(data: Path, **devices: str) -> Path:
    """A fresh till folder with the example program less its clock-dependent bonuses; keyword
    arguments set [devices]/[api] fields (camera, scanner, printer...)."""
    init_till(data, store="JKT-01", terminal="T1", program=STEADY_PROGRAM, store_name="Kopi Senja",
              printer=devices.pop("printer", f"file://{data / 'receipts.bin'}"))
    cfg = replace(load_config(data), **devices)
    (data / CONFIG_NAME).write_text(render_config(cfg), encoding="utf-8")
    return data


@dataclass
class Agent:
    """An agent running in this process with its API on loopback."""

    rt: Runtime
    server: BackgroundServer
    client: TillClient

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def running_agent(data: Path, **options: Any) -> Iterator[Agent]:
    """Start the agent on `data`, serve it on a free loopback port, stop both afterwards."""
    rt = setup(AgentOptions(data=data, **options))
    try:
        server = BackgroundServer(rt).start()
        try:
            yield Agent(rt, server, TillClient(server.url))
        finally:
            server.stop()
    finally:
        rt.shutdown()


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `pred` until it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


JAKARTA = dt.timezone(dt.timedelta(hours=7))


def sale_time() -> dt.datetime:
    """Now in Jakarta (the kit's program has no bonus that depends on the day or the hour)."""
    return dt.datetime.now(JAKARTA)


# One time for every sale of a run: a POS retrying a sale sends the same `at`, and another
# sale under a used receipt number (a different `at` included) is refused.
SALE_AT = sale_time().isoformat()


def sale(receipt: str, member: str | None = None, qty: int = 2) -> dict[str, Any]:
    d: dict[str, Any] = {"receipt": receipt, "total": qty * 25000, "at": SALE_AT,
                         "lines": [{"sku": "KOPI-SUSU", "name": "Es Kopi Susu", "qty": qty, "price": 25000}]}
    if member:
        d["member"] = member
    return d


class PtyScanner:
    """A simulated serial scanner: tests write scans into the master; the agent opens `path`."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def scan(self, payload: str) -> float:
        """Type one scan (CR-terminated); returns the perf_counter time it was written."""
        t = time.perf_counter()
        os.write(self.master, payload.encode() + b"\r")
        return t

    def unplug(self) -> None:
        """Close both ends: the agent's port reports an error and is retried."""
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class LoopbackPrinter:
    """An ESC/POS network printer on 127.0.0.1: keeps what it receives, answers status queries."""

    def __init__(self, port: int = 0) -> None:
        self.received = bytearray()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock: socket.socket | None = None
        self.port = port
        self.plug()

    @property
    def url(self) -> str:
        return f"escpos+tcp://127.0.0.1:{self.port}?timeout=1"

    def plug(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(8)
        self.port = s.getsockname()[1]
        self._sock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def unplug(self) -> None:
        """The printer goes away: listening socket and connections close."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
            self._sock.close()
            self._sock = None
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        self._conns.clear()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while (i := buf.find(b"\x10\x04")) >= 0 and len(buf) >= i + 3:
                with self._lock:
                    self.received += buf[:i]
                buf = buf[i + 3:]
                with contextlib.suppress(OSError):
                    conn.sendall(b"\x12")  # online, paper ok
            if b"\x10" not in buf[-2:]:
                with self._lock:
                    self.received += buf
                buf = b""

    def receipts(self) -> list[str]:
        """Receipt numbers printed so far (a job repeated after a broken link counts once)."""
        from tillstamp.drivers.escpos_decode import decode

        with self._lock:
            data = bytes(self.received)
        return sorted({t.split()[1] for t in decode(data).text if t.startswith("No ")})


def struk(no: str, items: tuple[tuple[str, int, int], ...] = (("Es Kopi Susu Aren", 2, 25000),),
          width: int = 32) -> bytes:
    """An Indonesian receipt as a POS prints it (the tap's `struk-id` template reads it), cut."""
    from escpos.printer import Dummy

    def rp(n: int) -> str:
        return f"{n:,}".replace(",", ".")

    def cols(left: str, right: str) -> str:
        return f"{left}{' ' * max(2, width - len(left) - len(right))}{right}\n"

    when = sale_time() - dt.timedelta(minutes=1)
    p = Dummy()
    p.hw("INIT")
    p.set(align="center", bold=True)
    p.text("TOKO KOPI SENJA\n")
    p.set(align="left", bold=False)
    p.text("-" * width + "\n")
    p.text(f"No. Struk : {no}\n")
    p.text(f"Tanggal   : {when:%d/%m/%Y %H:%M}\n")
    p.text("-" * width + "\n")
    total = 0
    for name, qty, price in items:
        total += qty * price
        p.text(name + "\n")
        p.text(cols(f"  {qty} x {rp(price)}", rp(qty * price)))
    p.text("-" * width + "\n")
    p.text(cols("TOTAL", "Rp " + rp(total)))
    p.text(cols("TUNAI", "Rp " + rp(total)))
    p.cut()
    return bytes(p.output)


def pos_print(address: tuple[str, int], data: bytes) -> None:
    """Print `data` to a print tap as most POS drivers do: connect, send, close."""
    with socket.create_connection(address, timeout=5) as s:
        s.sendall(data)
