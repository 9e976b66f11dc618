"""Print tap benchmark: latency added per job and throughput on 1 MB jobs, against a simulator.

Run: `python benchmarks/bench_tap.py [--jobs N]`. Prints a markdown table.

A job is timed the way a POS would see it: connect, send the job followed by DLE EOT 1, and
wait for the printer's status byte, which the printer sends only after it read everything
before it (through the tap: the job *and* the inserted loyalty block). "direct" sends the
same bytes straight to the simulator in the same run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from escpos.printer import Dummy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tillstamp.agent.till import init_till, open_till
from tillstamp.tap import TapConfig, TapServer, resolve_templates, service_record
from tillstamp.tap.session import SessionSettings

STATUS = b"\x10\x04\x01"


class Simulator:
    """A network printer that swallows bytes and answers DLE EOT after reading what precedes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"escpos+tcp://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        tail = b""
        with conn:
            while chunk := conn.recv(1 << 16):
                data = tail + chunk
                n = data.count(STATUS)
                if n:
                    conn.sendall(b"\x12" * n)
                # Keep an unfinished query (split over two reads) for the next read.
                tail = data[-2:] if data.endswith(b"\x10\x04") else data[-1:] if data.endswith(b"\x10") else b""


class BareProxy:
    """The least any proxy in Python does: copy bytes both ways, read nothing (the ceiling)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = self.sock.getsockname()[:2]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, pos: socket.socket) -> None:
        printer = socket.create_connection(self.upstream)
        for s in (pos, printer):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def relay() -> None:
            try:
                while data := printer.recv(1 << 16):
                    pos.sendall(data)
            except OSError:
                return  # the other direction closed both sockets: the job is over

        threading.Thread(target=relay, daemon=True).start()
        with pos, printer:
            while data := pos.recv(1 << 18):
                printer.sendall(data)
            printer.shutdown(socket.SHUT_WR)


def receipt(no: str) -> bytes:
    """A 32-column Indonesian receipt drawn with python-escpos."""
    p = Dummy()
    p.hw("INIT")
    p.set(align="center", bold=True)
    p.text("TOKO KOPI SENJA\n")
    p.set(align="left", bold=False)
    p.text(f"{'-' * 32}\nNo. Struk : {no}\nTanggal   : 23/11/2026 09:15\n{'-' * 32}\n")
    p.text("Es Kopi Susu Aren\n  2 x 25.000              50.000\n")
    p.text("Roti Bakar Cokelat        18.000\n" + "-" * 32 + "\n")
    p.text("TOTAL                  Rp 68.000\nTUNAI                 Rp 100.000\n")
    p.cut()
    return bytes(p.output)


def big_raster(size: int) -> bytes:
    """A ~`size`-byte job: a GS v 0 raster image (a logo, a coupon) with a little text and a cut."""
    row = 72  # 576 dots: an 80 mm printer
    height = size // row
    img = bytes((i * 37) & 0xFF for i in range(row * height))
    return (b"\x1b@\x1dv0\x00" + row.to_bytes(2, "little") + height.to_bytes(2, "little") + img
            + b"Kupon belanja\n\x1dV\x00")


def big_text(size: int) -> bytes:
    """A ~`size`-byte job of text lines (a long stock report), bold toggles on every line."""
    line = b"\x1bE\x01Kopi Gayo 250 g\x1bE\x00      12 x 85.000     1.020.000\n"
    return b"\x1b@" + line * (size // len(line)) + b"\x1dV\x00"


def timed(address: tuple[str, int], data: bytes) -> float:
    """Seconds from connect to the printer's answer to the DLE EOT after `data`."""
    t0 = time.perf_counter()
    with socket.create_connection(address) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data + STATUS)
        if s.recv(1) != b"\x12":
            raise RuntimeError("no status answer")
    return time.perf_counter() - t0


def main() -> None:
    # The pass-through and 1 MB cases are meant not to match a template; their warnings are noise here.
    logging.getLogger("tillstamp.tap").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=60, help="receipts per latency row")
    ap.add_argument("--big", type=int, default=5, help="1 MB jobs per throughput row")
    args = ap.parse_args()

    sim = Simulator()
    direct = ("127.0.0.1", sim.port)
    bare = BareProxy(direct).address
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "till"
        init_till(data, store="BENCH", terminal="T1", program=ROOT / "examples" / "program.toml")
        with open_till(data) as till:
            cfg = TapConfig(listen="tcp://127.0.0.1:0", printer=sim.url, folder=Path(tmp) / "tap",
                            templates=resolve_templates(None), width=32,
                            session=SessionSettings(cut_idle=0.05, idle=1.0))
            with TapServer(cfg, service_record(till.service)) as server:
                assert server.address is not None
                tapped = server.address
                timed(direct, receipt("WARM-0"))
                timed(tapped, receipt("WARM-1"))

                def latency(label: str, make: object, note: str) -> None:
                    d = [timed(direct, make(f"D-{label}-{i}")) for i in range(args.jobs)]  # type: ignore[operator]
                    t = [timed(tapped, make(f"T-{label}-{i}")) for i in range(args.jobs)]  # type: ignore[operator]
                    md, mt = statistics.median(d) * 1e3, statistics.median(t) * 1e3
                    p95 = sorted(t)[int(0.95 * len(t)) - 1] * 1e3
                    rows.append((label, f"{md:.2f} ms", f"{mt:.2f} ms (p95 {p95:.2f})",
                                 f"+{mt - md:.2f} ms {note}"))

                latency("receipt, read + recorded (SQLite, synchronous=FULL)", receipt,
                        "per job")
                latency("receipt, duplicate (reprint)", lambda _n: receipt("SAME-1"), "per job")
                latency("job no template reads (pass-through)",
                        lambda n: b"\x1b@Laporan stok " + n.encode() + b"\n\x1dV\x00", "per job")

                for label, job in (("1 MB raster job", big_raster(1 << 20)),
                                   ("1 MB text job", big_text(1 << 20))):
                    d, b, t = (min(timed(a, job) for _ in range(args.big))
                               for a in (direct, bare, tapped))
                    mb = len(job) / 1e6
                    rows.append((label, f"{mb / d:.0f} MB/s ({d * 1e3:.1f} ms)",
                                 f"{mb / t:.0f} MB/s ({t * 1e3:.1f} ms)",
                                 f"x{d / t:.2f} of direct (bare proxy: {mb / b:.0f} MB/s, x{d / b:.2f})"))

    print(f"tap benchmark, {dt.date.today().isoformat()}, nproc {os.cpu_count()}, "
          f"{platform.machine()}, Python {platform.python_version()}\n")
    print("| case | direct to simulator | through the tap | difference |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
