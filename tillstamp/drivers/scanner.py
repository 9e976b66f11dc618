"""Serial barcode scanners: bytes from a port, framed into scans by prefix and suffix.

URL grammar:
    serial:///dev/ttyUSB0[?baudrate=9600&prefix=STX&suffix=CR]   a serial port, 8N1
    /dev/ttyUSB0, /dev/pts/3                                    a bare path means serial
    loop://, socket://HOST:PORT, spy://..., rfc2217://...       pyserial URLs, as they are
    stdin://[?suffix=LF]                                        a keyboard-wedge scanner in a terminal
                                                                (ends at end of input: a pipe or file)

Options (query or keyword): baudrate (9600), prefix and suffix (CR, LF, CRLF, TAB, STX, ETX or
literal text; suffix CR by default), timeout (read poll, 0.2 s).
"""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Callable
from dataclasses import dataclass

import serial

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable, UnknownSchemeError
from tillstamp.drivers.events import ScanCallback, StateCallback
from tillstamp.drivers.reader import Backoff, DeviceReader, SourceExhausted
from tillstamp.drivers.urls import DeviceURL, parse_url

log = logging.getLogger(__name__)
MAX_LINE = 4096
TERMINATORS = {"CR": b"\r", "LF": b"\n", "CRLF": b"\r\n", "TAB": b"\t", "STX": b"\x02",
               "ETX": b"\x03", "": b""}
PYSERIAL_SCHEMES = ("loop", "socket", "spy", "rfc2217", "hwgrep", "alt", "cp2110")


def terminator(name: str) -> bytes:
    """Bytes for CR, LF, CRLF, TAB, STX or ETX; any other text is taken literally."""
    return TERMINATORS.get(name.upper(), name.encode("utf-8"))


class Framer:
    """Turns byte chunks into scan payloads; noise, bad UTF-8 and over-long lines are dropped."""

    def __init__(self, prefix: bytes = b"", suffix: bytes = b"\r", max_len: int = MAX_LINE) -> None:
        if not suffix:
            raise DeviceConfigError("a scanner needs a suffix to know where a scan ends")
        self.prefix = prefix
        self.suffix = suffix
        self.max_len = max_len
        self._buf = bytearray()
        self._discarding = False  # inside an over-long line: drop up to its end

    def reset(self) -> None:
        """Forget a partial line (after the port was lost)."""
        self._buf.clear()
        self._discarding = False

    def finish(self) -> list[str]:
        """The input ended: the last scan counts even without its suffix (`printf 'X\\r'`)."""
        frame, discarding = bytes(self._buf), self._discarding
        self.reset()
        payload = None if discarding else self._payload(frame)
        return [payload] if payload is not None else []

    def feed(self, chunk: bytes) -> list[str]:
        """Add bytes; return the payloads completed by them."""
        self._buf += chunk
        out: list[str] = []
        while True:
            end = self._buf.find(self.suffix)
            if end < 0:
                break
            frame = bytes(self._buf[:end])
            del self._buf[: end + len(self.suffix)]
            if self._discarding:
                self._discarding = False
                continue
            payload = self._payload(frame)
            if payload is not None:
                out.append(payload)
        if len(self._buf) > self.max_len:
            log.warning("scanner line longer than %d bytes dropped", self.max_len)
            self._buf.clear()
            self._discarding = True
        return out

    def _payload(self, frame: bytes) -> str | None:
        # CR/LF left over from a scanner that ends lines differently from our suffix.
        frame = frame.strip(b"\r\n\x00")
        if not frame:
            return None
        if len(frame) > self.max_len:
            log.warning("scanner line longer than %d bytes dropped", self.max_len)
            return None
        if self.prefix:
            start = frame.rfind(self.prefix)
            if start < 0:
                log.warning("scanner noise without prefix dropped: %r", frame[:40])
                return None
            frame = frame[start + len(self.prefix):]
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("scanner line that is not UTF-8 dropped: %r", frame[:40])
            return None
        if any(ord(c) < 0x20 and c not in "\t" for c in text):
            log.warning("scanner line with control bytes dropped: %r", frame[:40])
            return None
        return text or None


@dataclass(frozen=True)
class ScannerSettings:
    """Where a scanner is and how its scans are framed."""

    url: str
    port: str  # what serial_for_url opens, or "stdin"
    baudrate: int = 9600
    prefix: bytes = b""
    suffix: bytes = b"\r"
    timeout: float = 0.2


class SerialScanner:
    """An opened serial scanner port."""

    def __init__(self, settings: ScannerSettings) -> None:
        self.settings = settings
        try:
            self._ser = serial.serial_for_url(settings.port, baudrate=settings.baudrate,
                                              timeout=settings.timeout)
        except (ValueError, KeyError) as e:  # pyserial's URL handlers raise KeyError on some
            raise DeviceConfigError(f"bad scanner settings in {settings.url!r}: {e}") from e
        except serial.SerialException as e:
            raise DeviceUnavailable(f"cannot open {settings.port}: {e}") from e

    def read(self) -> bytes:
        """Bytes waiting (b"" after the poll timeout); an unplugged port is DeviceUnavailable."""
        try:
            # read(1) waits up to the timeout; then take whatever else has arrived.
            first = self._ser.read(1)
            return first + self._ser.read(self._ser.in_waiting) if first else b""
        except (serial.SerialException, OSError) as e:
            # pyserial reports an unplugged USB adapter as "device reports readiness to read
            # but returned no data" while is_open stays true: the caller must close and reopen.
            raise DeviceUnavailable(f"{self.settings.url}: {e}") from e

    def close(self) -> None:
        """Close the port."""
        self._ser.close()


class StdinScanner:
    """A keyboard-wedge scanner typing into this terminal."""

    def __init__(self, settings: ScannerSettings, fd: int | None = None) -> None:
        self.settings = settings
        self._fd = sys.stdin.fileno() if fd is None else fd

    def read(self) -> bytes:
        """Bytes typed so far (b"" after the poll timeout); end of input is EndOfInput."""
        ready, _, _ = select.select([self._fd], [], [], self.settings.timeout)
        if not ready:
            return b""
        data = os.read(self._fd, 4096)
        if not data:
            # A pipe or file that ended will never give more: reopening it would spin forever.
            raise EndOfInput("stdin ended")
        return data

    def close(self) -> None:
        """Nothing to release: stdin belongs to the process."""


Scanner = SerialScanner | StdinScanner


class EndOfInput(SourceExhausted):
    """stdin reached its end: the scanner is finished, not lost."""


def scanner_settings(url: str, *, baudrate: int | None = None, prefix: str | None = None,
                     suffix: str | None = None, timeout: float | None = None) -> ScannerSettings:
    """Parse a scanner URL (or bare path) and keyword overrides into settings."""
    if "://" not in url:
        u = DeviceURL(url, "serial", "", None, url, {})
    else:
        u = parse_url(url)
    known = ("serial", "stdin", *PYSERIAL_SCHEMES)
    if u.scheme not in known:
        raise UnknownSchemeError(url, "scanner", known)
    if u.scheme == "serial":
        if not u.path:
            raise DeviceConfigError(f"{url!r} needs a device path: serial:///dev/ttyUSB0")
        port = u.path
    elif u.scheme == "stdin":
        port = "stdin"
    else:
        port = url  # pyserial parses its own URLs and their options
    # Query options belong to us only for serial:// and stdin://; pyserial owns the others'.
    ours = u if u.scheme in ("serial", "stdin") else DeviceURL(url, u.scheme, "", None, "", {})
    default_suffix = "LF" if u.scheme == "stdin" else "CR"
    return ScannerSettings(
        url=url,
        port=port,
        baudrate=baudrate or ours.int_option("baudrate", 9600),
        prefix=terminator(prefix if prefix is not None else ours.options.get("prefix", "")),
        suffix=terminator(suffix if suffix is not None else ours.options.get("suffix",
                                                                             default_suffix)),
        timeout=timeout if timeout is not None else ours.float_option("timeout", 0.2),
    )


def open_scanner(url: str, **options: object) -> Scanner:
    """Open a scanner from its URL; DeviceConfigError for a bad URL, DeviceUnavailable if absent."""
    settings = scanner_settings(url, **options)  # type: ignore[arg-type]
    if settings.port == "stdin":
        return StdinScanner(settings)
    return SerialScanner(settings)


class _ScannerSession:
    def __init__(self, scanner: Scanner, framer: Framer) -> None:
        self.scanner = scanner
        self.framer = framer
        self.ended = False
        framer.reset()

    def poll(self) -> list[str]:
        if self.ended:
            raise EndOfInput("stdin ended")
        try:
            return self.framer.feed(self.scanner.read())
        except EndOfInput:
            self.ended = True
            return self.framer.finish()  # the last scan first; the next poll ends the reader

    def close(self) -> None:
        self.scanner.close()


def scanner_reader(url: str, on_scan: ScanCallback, *, on_state: StateCallback | None = None,
                   backoff: Backoff | None = None, wait: Callable[[float], object] | None = None,
                   **options: object) -> DeviceReader:
    """A reader thread (not yet started) that reopens the scanner with backoff when it is lost."""
    settings = scanner_settings(url, **options)  # type: ignore[arg-type]
    framer = Framer(settings.prefix, settings.suffix)

    def opener() -> _ScannerSession:
        port: Scanner = StdinScanner(settings) if settings.port == "stdin" else SerialScanner(settings)
        return _ScannerSession(port, framer)

    return DeviceReader(url, opener, on_scan, on_state=on_state, backoff=backoff, wait=wait)
