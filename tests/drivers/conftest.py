"""Fixtures for driver tests: a TCP printer that answers status queries, QR images, receipts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
import qrcode
from support import SHARED_DATA

from tillstamp.drivers.receipt import ExpiringStamps, MissionProgress, Receipt, SaleLine

DATA = SHARED_DATA  # read through the `shared_data` fixture, which skips where it is absent
WIB = timezone(timedelta(hours=7))

ONLINE, OFFLINE = 0x12, 0x1A
PAPER_OK, PAPER_LOW, PAPER_OUT = 0x12, 0x1E, 0x72


class FakePrinter:
    """A raw-TCP printer on 127.0.0.1: records bytes, answers DLE EOT 1 and 4, can misbehave."""

    def __init__(self) -> None:
        self.online = True
        self.paper = PAPER_OK
        self.drop_after: int | None = None  # close the next connection after this many bytes
        self.received = bytearray()  # everything except status queries
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
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

    def _handle(self, conn: socket.socket) -> None:
        pending = b""
        took = 0
        limit, self.drop_after = self.drop_after, None
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                if limit is not None and took + len(chunk) >= limit:
                    with self._lock:
                        self.received += chunk[: limit - took]
                    return  # the cable is pulled mid-job
                took += len(chunk)
                data = pending + chunk
                out = bytearray()
                i = 0
                while i < len(data):
                    if data[i] == 0x10 and data[i + 1 : i + 2] == b"\x04":
                        if i + 2 >= len(data):
                            break
                        n = data[i + 2]
                        conn.sendall(bytes([(ONLINE if self.online else OFFLINE) if n == 1
                                            else self.paper]))
                        i += 3
                        continue
                    out.append(data[i])
                    i += 1
                pending = data[i:]
                with self._lock:
                    self.received += out

    def take(self) -> bytes:
        """Bytes received so far (status queries removed)."""
        with self._lock:
            return bytes(self.received)

    def close(self) -> None:
        """Stop listening: the printer is switched off."""
        self._stop.set()
        self._sock.close()


@pytest.fixture
def fake_printer() -> Iterator[FakePrinter]:
    """A running FakePrinter."""
    printer = FakePrinter()
    yield printer
    printer.close()


def free_port_url() -> str:
    """A TCP printer URL where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"escpos+tcp://127.0.0.1:{port}?timeout=0.5"


def qr_image(payload: str, box: int = 6, border: int = 4) -> np.ndarray:
    """A grey QR code image as the camera would see a clean print."""
    code = qrcode.QRCode(box_size=box, border=border)
    code.add_data(payload)
    code.make(fit=True)
    return np.array(code.make_image().get_image().convert("L"), dtype=np.uint8)


@pytest.fixture
def receipt() -> Receipt:
    """A full loyalty receipt with accented names."""
    return Receipt(
        store_name="Café Señor",
        store_lines=("Jl. Kemang Raya 8", "Jakarta Selatan"),
        receipt_no="A-0042",
        at=datetime(2025, 3, 14, 9, 30, tzinfo=WIB),
        lines=(SaleLine("Kopi Susu Gula Aren", 2, 12500, 25000),
               SaleLine("Roti Bakar José", 1, 18000, 18000)),
        total=43000,
        member_name="José Santoso",
        stamps_earned=3,
        balance=5,
        card_filled=5,
        card_size=10,
        tier="Silver",
        next_tier="Gold",
        to_next_tier=4,
        missions=(MissionProgress("Beli 5 kopi", 3, 5),),
        expiring=(ExpiringStamps(2, date(2025, 4, 1)),),
        qr_payload="TS1MEMBER7QXZ2K",
        qr_caption="Scan untuk klaim 3 stempel",
    )
