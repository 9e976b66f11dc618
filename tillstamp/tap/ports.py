"""The two ends of the proxy as byte pipes: the POS side and the printer side.

Printer URLs are the drivers' grammar (`escpos+tcp://HOST[:9100][?timeout=S]`,
`escpos+serial:///dev/ttyS0[?baudrate=19200]`, any pyserial URL after `escpos+serial://`,
`file:///path`, `dummy://`, `escpos+usb://VID:PID`). TCP and serial printers are opened
here as full-duplex pipes, because the proxy must relay the printer's answers (status bytes,
automatic status back) while the POS is still sending; the drivers' `Printer` only writes
and asks status itself. The other schemes go through `drivers.printer.open_printer` and
cannot answer: the tap answers status queries for them (see `session.local_status`).

Listen URLs: `tcp://HOST:PORT` (port 9100 is what a network receipt printer listens on;
`tcp://:PORT` is loopback, and any other host needs the `[tap] allow` list of POS addresses),
`serial:///dev/ttyS1[?baudrate=19200]` or a bare device path (a serial or pty port the POS
prints to).
"""

from __future__ import annotations

import select
import socket
from typing import Protocol

import serial

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.printer import Printer, open_printer
from tillstamp.drivers.urls import parse_url

_READ = 1 << 18  # bytes per socket read


class Pipe(Protocol):
    """A byte pipe: `recv` gives None when nothing came within `timeout`, b"" once closed."""

    duplex: bool

    def send(self, data: bytes) -> None: ...
    def recv(self, timeout: float) -> bytes | None: ...
    def close(self) -> None: ...


class SocketPipe:
    """A connected TCP socket (the POS, or a network printer)."""

    duplex = True

    def __init__(self, sock: socket.socket, write_timeout: float = 30.0) -> None:
        self.sock = sock
        # Blocking sends with a timeout; receives wait in select() so both can run at once.
        sock.settimeout(write_timeout)

    def send(self, data: bytes) -> None:
        """Send all of `data`; a broken or stalled link is DeviceUnavailable."""
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise DeviceUnavailable(f"send failed: {e}") from e

    def recv(self, timeout: float) -> bytes | None:
        """Up to 256 KiB, None after `timeout` seconds of silence, b"" when closed."""
        try:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                return None
            # Large reads: a 1 MB job is a few trips through the proxy's Python, not sixteen.
            return self.sock.recv(_READ)
        except (OSError, ValueError):  # reset by peer, or closed under us by stop()
            return b""

    def shutdown_write(self) -> None:
        """Tell the other end we have nothing more to send."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return  # already gone: nothing to tell

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


class SerialPipe:
    """A serial line (a printer on RS-232, or the port a POS prints to)."""

    duplex = True

    def __init__(self, port: serial.SerialBase) -> None:
        self.port = port

    def send(self, data: bytes) -> None:
        """Write all of `data`."""
        try:
            self.port.write(data)
            self.port.flush()
        except (OSError, serial.SerialException) as e:
            raise DeviceUnavailable(f"serial write failed: {e}") from e

    def recv(self, timeout: float) -> bytes | None:
        """What arrived within `timeout` seconds, else None; a serial line never closes."""
        try:
            self.port.timeout = timeout
            first = self.port.read(1)
            if not first:
                return None
            return first + self.port.read(self.port.in_waiting)
        except (OSError, serial.SerialException, TypeError):
            return b""  # the port went away (unplugged, or closed by stop())

    def close(self) -> None:
        """Close the port."""
        self.port.close()


class WritePipe:
    """A printer that only takes bytes (file, dummy, USB): it never answers."""

    duplex = False

    def __init__(self, printer: Printer) -> None:
        self.printer = printer

    def send(self, data: bytes) -> None:
        """Write `data` to the printer."""
        self.printer.write(data)

    def recv(self, timeout: float) -> bytes | None:
        """Nothing ever comes back."""
        return None

    def close(self) -> None:
        """Close the printer."""
        self.printer.close()


def open_serial(target: str, baudrate: int, timeout: float = 0.2) -> serial.SerialBase:
    """Open a serial device or pyserial URL; DeviceConfigError / DeviceUnavailable as drivers do."""
    try:
        return serial.serial_for_url(target, baudrate=baudrate, timeout=timeout, write_timeout=30)
    except (ValueError, KeyError) as e:
        raise DeviceConfigError(f"bad serial settings {target!r}: {e}") from e
    except serial.SerialException as e:
        raise DeviceUnavailable(f"cannot open {target}: {e}") from e


def open_upstream(url: str, connect_timeout: float = 2.0) -> Pipe:
    """Connect to the printer `url`; DeviceUnavailable when it is off, DeviceConfigError if bad."""
    u = parse_url(url)
    if u.scheme == "escpos+tcp":
        if not u.host:
            raise DeviceConfigError(f"{url!r} needs a host: escpos+tcp://HOST:9100")
        timeout = u.float_option("timeout", connect_timeout)
        try:
            sock = socket.create_connection((u.host, u.port or 9100), timeout=timeout)
        except OSError as e:
            raise DeviceUnavailable(f"cannot connect to {u.host}:{u.port or 9100}: {e}") from e
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return SocketPipe(sock)
    if u.scheme == "escpos+serial":
        rest = url.split("://", 1)[1]
        if "://" in rest:
            return SerialPipe(open_serial(rest, 19200))
        if not u.path:
            raise DeviceConfigError(f"{url!r} needs a device path: escpos+serial:///dev/ttyS0")
        return SerialPipe(open_serial(u.path, u.int_option("baudrate", 19200)))
    return WritePipe(open_printer(url))


def parse_listen(url: str) -> tuple[str, str, int]:
    """("tcp", host, port) or ("serial", target, baudrate) from a listen URL."""
    if url.startswith("/"):
        return "serial", url, 19200
    u = parse_url(url)
    if u.scheme == "tcp":
        if u.port is None:
            raise DeviceConfigError(f"{url!r}: expected tcp://HOST:PORT (e.g. tcp://127.0.0.1:9100)")
        # No host means loopback: listening beyond this machine is a choice made explicitly.
        return "tcp", u.host or "127.0.0.1", u.port
    if u.scheme == "serial":
        rest = url.split("://", 1)[1]
        if "://" in rest:
            return "serial", rest, 19200
        if not u.path:
            raise DeviceConfigError(f"{url!r} needs a device path: serial:///dev/ttyS1")
        return "serial", u.path, u.int_option("baudrate", 19200)
    raise DeviceConfigError(f"unknown listen URL {url!r}: use tcp://HOST:PORT or serial:///dev/ttyS1")
