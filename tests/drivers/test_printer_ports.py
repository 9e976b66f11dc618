"""Printer ports on real things: memory, files, and a TCP printer on loopback."""

from __future__ import annotations

import pytest

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.printer import PrinterStatus, open_printer, parse_status

from .conftest import OFFLINE, PAPER_LOW, PAPER_OUT, FakePrinter, free_port_url


def test_dummy_keeps_bytes() -> None:
    with open_printer("dummy://") as p:
        p.write(b"a")
        p.write(b"b\n")
        assert p.output == b"ab\n"  # type: ignore[attr-defined]
        assert p.status() == PrinterStatus(None, "unknown")


def test_file_appends(tmp_path) -> None:
    out = tmp_path / "out.bin"
    for text in (b"one\n", b"two\n"):
        with open_printer(f"file://{out}") as p:
            p.write(text)
    assert decode(out.read_bytes()).text == ["one", "two"]


def test_tcp_writes_and_reads_status(fake_printer: FakePrinter) -> None:
    with open_printer(fake_printer.url) as p:
        assert p.status() == PrinterStatus(True, "ok")
        p.write(b"\x1b@Halo\n")
        fake_printer.paper = PAPER_LOW
        assert p.status().paper == "low"
        fake_printer.paper, fake_printer.online = PAPER_OUT, False
        status = p.status()
    assert status == PrinterStatus(False, "out") and not status.ready
    assert fake_printer.take() == b"\x1b@Halo\n"


def test_tcp_printer_switched_off_is_unavailable() -> None:
    with pytest.raises(DeviceUnavailable, match="cannot connect"):
        open_printer(free_port_url())


def test_serial_printer_on_loop() -> None:
    with open_printer("escpos+serial://loop://") as p:
        p.write(b"\x1b@Halo\n")


def test_usb_without_pyusb_or_device() -> None:
    with pytest.raises((DeviceConfigError, DeviceUnavailable)):
        open_printer("escpos+usb://04b8:0202")


@pytest.mark.parametrize(("online", "paper", "want"), [
    (0x12, 0x12, PrinterStatus(True, "ok")), (OFFLINE, 0x12, PrinterStatus(False, "ok")),
    (0x12, PAPER_LOW, PrinterStatus(True, "low")), (0x12, PAPER_OUT, PrinterStatus(True, "out")),
    (None, None, PrinterStatus(None, "unknown")),
])
def test_parse_status(online: int | None, paper: int | None, want: PrinterStatus) -> None:
    assert parse_status(online, paper) == want
