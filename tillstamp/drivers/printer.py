"""ESC/POS printer ports: each opens from a URL and only moves bytes (and reads status).

URL grammar:
    escpos+tcp://HOST[:PORT][?timeout=S]            raw TCP, port 9100 by default; bidirectional
    escpos+serial:///dev/ttyS0[?baudrate=19200]     a serial port, 8N1; bidirectional
    escpos+serial://loop://, escpos+serial://socket://HOST:PORT   any pyserial URL, kept whole
    escpos+usb://VID:PID[?interface=0]              hex ids, e.g. escpos+usb://04b8:0202 (pyusb)
    file:///path/out.bin                            appends every job to the file
    dummy://                                        keeps the bytes in memory (`.output`)

Status (DLE EOT 1 and 4) is asked only where the port reads back; elsewhere it is unknown.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import serial

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.lifecycle import Device
from tillstamp.drivers.urls import DeviceURL, lookup

DLE_EOT_ONLINE = b"\x10\x04\x01"
DLE_EOT_PAPER = b"\x10\x04\x04"


@dataclass(frozen=True)
class PrinterStatus:
    """What the printer says about itself; None where the port cannot ask."""

    online: bool | None = None
    paper: str = "unknown"  # "ok" | "low" | "out" | "unknown"

    @property
    def ready(self) -> bool:
        """False only when the printer positively reports offline or out of paper."""
        return self.online is not False and self.paper != "out"


def parse_status(online_byte: int | None, paper_byte: int | None) -> PrinterStatus:
    """Decode DLE EOT 1 (bit 3: offline) and DLE EOT 4 (bits 2-3 near end, 5-6 paper end)."""
    online = None if online_byte is None else not online_byte & 0x08
    if paper_byte is None:
        paper = "unknown"
    elif paper_byte & 0x60:
        paper = "out"
    elif paper_byte & 0x0C:
        paper = "low"
    else:
        paper = "ok"
    return PrinterStatus(online, paper)


class Printer(Protocol):
    """An opened printer port."""

    url: str

    def write(self, data: bytes) -> None: ...
    def status(self) -> PrinterStatus: ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class _Port(Device):
    def status(self) -> PrinterStatus:
        """Unknown: this port cannot read back."""
        return PrinterStatus()


class DummyPrinter(_Port):
    """Keeps every byte written in `output`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.output = b""

    def write(self, data: bytes) -> None:
        """Append `data` to `output`."""
        self.output += data


class FilePrinter(_Port):
    """Appends jobs to a file (a printer device node, a capture for preview)."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        try:
            self._f = open(path, "ab")  # noqa: SIM115 - closed by close()
        except OSError as e:
            raise DeviceUnavailable(f"cannot open {path}: {e.strerror}") from e

    def write(self, data: bytes) -> None:
        """Append `data` and flush it to the file."""
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as e:
            raise DeviceUnavailable(f"write to {self.url} failed: {e.strerror}") from e

    def close(self) -> None:
        """Close the file."""
        self._f.close()


class _StreamPrinter(_Port):
    """A bidirectional byte pipe: TCP socket or serial line."""

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _recv1(self) -> int | None:
        raise NotImplementedError

    def write(self, data: bytes) -> None:
        """Send all of `data`; a broken link is DeviceUnavailable."""
        try:
            self._send(data)
        except (OSError, serial.SerialException) as e:
            raise DeviceUnavailable(f"write to {self.url} failed: {e}") from e

    def _drain(self) -> None:
        raise NotImplementedError

    def status(self) -> PrinterStatus:
        """Ask DLE EOT 1 and 4; no answer within the timeout is DeviceUnavailable."""
        try:
            # Raster data can contain DLE EOT by accident and a printer answers those too:
            # drop stale answers so this query reads its own.
            self._drain()
            self._send(DLE_EOT_ONLINE)
            online = self._recv1()
            self._send(DLE_EOT_PAPER)
            paper = self._recv1()
        except (OSError, serial.SerialException) as e:
            raise DeviceUnavailable(f"status query to {self.url} failed: {e}") from e
        if online is None:
            raise DeviceUnavailable(f"{self.url} did not answer the status query")
        return parse_status(online, paper)


class TcpPrinter(_StreamPrinter):
    """A network printer on raw TCP (port 9100)."""

    def __init__(self, url: str, host: str, port: int, timeout: float) -> None:
        self.url = url
        self._timeout = timeout
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise DeviceUnavailable(f"cannot connect to {host}:{port}: {e}") from e

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def _drain(self) -> None:
        self._sock.setblocking(False)
        try:
            while self._sock.recv(4096):
                pass
        except BlockingIOError:
            pass
        finally:
            self._sock.settimeout(self._timeout)

    def _recv1(self) -> int | None:
        try:
            got = self._sock.recv(1)
        except TimeoutError:
            return None
        if not got:
            raise ConnectionResetError("printer closed the connection")
        return got[0]

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


class SerialPrinter(_StreamPrinter):
    """A printer on a serial line (any pyserial URL)."""

    def __init__(self, url: str, port: str, baudrate: int, timeout: float) -> None:
        self.url = url
        try:
            self._ser = serial.serial_for_url(port, baudrate=baudrate, timeout=timeout,
                                              write_timeout=max(timeout, 10.0))
        except (ValueError, KeyError) as e:  # pyserial's URL handlers raise KeyError on some
            raise DeviceConfigError(f"bad serial settings in {url!r}: {e}") from e
        except serial.SerialException as e:
            raise DeviceUnavailable(f"cannot open {port}: {e}") from e

    def _send(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()

    def _drain(self) -> None:
        self._ser.reset_input_buffer()

    def _recv1(self) -> int | None:
        got = self._ser.read(1)
        return got[0] if got else None

    def close(self) -> None:
        """Close the serial port."""
        self._ser.close()


class UsbPrinter(_Port):
    """A USB printer through python-escpos' Usb class (needs pyusb)."""

    def __init__(self, url: str, vendor: int, product: int, interface: int) -> None:
        self.url = url
        try:
            from escpos.printer import Usb  # imported here: pyusb is optional
        except ImportError as e:
            raise DeviceConfigError("escpos+usb:// needs pyusb (pip install pyusb)") from e
        if not Usb.is_usable():
            raise DeviceConfigError("escpos+usb:// needs pyusb (pip install pyusb)")
        self._usb = Usb(vendor, product, interface=interface)
        try:
            self._usb.open(raise_not_found=True)
        except Exception as e:
            raise DeviceUnavailable(f"USB printer {vendor:04x}:{product:04x}: {e}") from e

    def write(self, data: bytes) -> None:
        """Send `data` over the bulk endpoint."""
        try:
            self._usb._raw(data)
        except Exception as e:
            raise DeviceUnavailable(f"USB write failed: {e}") from e

    def close(self) -> None:
        """Release the USB device."""
        self._usb.close()


def _open_tcp(u: DeviceURL) -> Printer:
    if not u.host:
        raise DeviceConfigError(f"{u.raw!r} needs a host: escpos+tcp://HOST:9100")
    return TcpPrinter(u.raw, u.host, u.port or 9100, u.float_option("timeout", 5.0))


def _open_serial(u: DeviceURL) -> Printer:
    rest = u.raw.split("://", 1)[1]
    if "://" in rest:  # escpos+serial://loop:// or socket://...: a pyserial URL, kept whole
        return SerialPrinter(u.raw, rest, 19200, 2.0)
    if not u.path:
        raise DeviceConfigError(f"{u.raw!r} needs a device path: escpos+serial:///dev/ttyS0")
    return SerialPrinter(u.raw, u.path, u.int_option("baudrate", 19200),
                         u.float_option("timeout", 2.0))


def _open_usb(u: DeviceURL) -> Printer:
    ids = u.raw.split("://", 1)[1].split("?", 1)[0].strip("/")
    try:
        vendor, product = (int(part, 16) for part in ids.split(":"))
    except ValueError:
        raise DeviceConfigError(f"{u.raw!r}: expected escpos+usb://VID:PID in hex") from None
    return UsbPrinter(u.raw, vendor, product, u.int_option("interface", 0))


def _open_file(u: DeviceURL) -> Printer:
    if not u.path:
        raise DeviceConfigError(f"{u.raw!r} needs a path: file:///path/out.bin")
    return FilePrinter(u.raw, Path(u.path))


PRINTER_SCHEMES: dict[str, Callable[[DeviceURL], Printer]] = {
    "escpos+tcp": _open_tcp,
    "escpos+serial": _open_serial,
    "escpos+usb": _open_usb,
    "file": _open_file,
    "dummy": lambda u: DummyPrinter(u.raw),
}


def open_printer(url: str) -> Printer:
    """Open the printer `url` names; DeviceConfigError for a bad URL, DeviceUnavailable if down."""
    return lookup(PRINTER_SCHEMES, url, "printer")
