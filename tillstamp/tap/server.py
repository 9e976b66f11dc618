"""The print tap server: listens where the POS prints, proxies each connection to the printer.

`TapServer(config, record, ...).start()` binds and starts its threads (nothing at import);
`stop()` ends them. `start_tap(till_config, record, ...)` builds one from the `[tap]` section
of tillstamp.toml for the agent's runtime, or returns None when the tap is not configured.

Threads: one accepting TCP connections (or one serving the serial port), one per POS
connection plus its printer-to-POS relay, one worker that makes the `record` calls one at a
time, and the print-queue worker once a job had to be spooled.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from tillstamp.drivers.errors import DeviceConfigError
from tillstamp.drivers.spool import PrintQueue
from tillstamp.tap.handler import ReceiptHandler, Record
from tillstamp.tap.jobs import JobKeeper, JobReport
from tillstamp.tap.ports import (
    Pipe,
    SerialPipe,
    SocketPipe,
    open_serial,
    open_upstream,
    parse_listen,
)
from tillstamp.tap.session import Session, SessionSettings
from tillstamp.tap.template import Template, TemplateError, resolve_templates

log = logging.getLogger("tillstamp.tap")


class TapConfigError(ValueError):
    """The `[tap]` section or a tap option is wrong; needs a person."""


@dataclass(frozen=True)
class TapConfig:
    """Where the tap listens and prints, how it reads receipts, where it keeps jobs."""

    listen: str
    printer: str
    folder: Path  # jobs/ (kept for fixing templates) and spool/ (waiting for the printer)
    # POS addresses (IPs or networks) that may print; required to listen beyond loopback,
    # because whoever connects gets sales recorded and valid signed claim QRs printed.
    allow: tuple[str, ...] = ()
    templates: tuple[Template, ...] = ()
    member_window_s: float = 120.0
    language: str = "id"
    width: int = 48
    offline: str = "spool"  # "spool": print when the printer is back; "keep": only keep it
    keep_jobs: int = 50
    keep_bytes: int = 20_000_000
    record_timeout_s: float = 3.0
    connect_timeout_s: float = 2.0
    session: SessionSettings = field(default_factory=SessionSettings)


def tap_config(section: dict[str, Any], data: Path, *, default_printer: str = "",
               language: str = "id") -> TapConfig:
    """A TapConfig from a `[tap]` table (paths relative to the data folder)."""
    def num(key: str, default: float) -> float:
        value = section.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise TapConfigError(f"[tap] {key} must be a number >= 0")
        return float(value)

    listen, printer = section.get("listen", ""), section.get("printer", default_printer)
    if not isinstance(listen, str) or not listen or not isinstance(printer, str) or not printer:
        raise TapConfigError("[tap] needs listen (tcp://HOST:PORT) and printer (a printer URL)")
    spec = section.get("template", "auto")
    if isinstance(spec, str) and spec.endswith(".toml") and not Path(spec).is_absolute():
        spec = str(data / spec)
    try:
        templates = resolve_templates(spec if isinstance(spec, str) else None)
    except TemplateError as e:
        raise TapConfigError(str(e)) from None
    offline = section.get("offline", "spool")
    if offline not in ("spool", "keep"):
        raise TapConfigError("[tap] offline must be 'spool' or 'keep'")
    width = int(num("width", 48))
    if width not in (32, 42, 48):
        raise TapConfigError("[tap] width must be 32, 42 or 48 columns")
    allow = section.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise TapConfigError('[tap] allow must be a list of POS addresses, e.g. ["192.168.1.20"]')
    config = TapConfig(
        listen=listen, printer=printer, folder=data / "tap", templates=templates, allow=tuple(allow),
        member_window_s=num("member_window_s", 120.0), language=language, width=width,
        offline=offline, record_timeout_s=num("record_timeout_s", 3.0),
        session=replace(SessionSettings(), cut_idle=num("cut_idle_s", 0.3), idle=num("idle_s", 5.0)),
    )
    check_listen(listen, config.allow)
    return config


def allowed_networks(allow: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The allow-list as networks; TapConfigError names an entry that is not an address."""
    nets = []
    for entry in allow:
        try:
            nets.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise TapConfigError(f"[tap] allow: {entry!r} is not an IP address or network "
                                 "(e.g. 192.168.1.20 or 192.168.1.0/24)") from None
    return tuple(nets)


def check_listen(listen: str, allow: tuple[str, ...]) -> None:
    """Refuse a TCP listen address beyond loopback without an allow-list of POS addresses."""
    try:
        kind, host, _ = parse_listen(listen)
    except DeviceConfigError as e:
        raise TapConfigError(str(e)) from None
    allowed_networks(allow)
    if kind != "tcp" or allow:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise TapConfigError(f"[tap] listen on {host}: set allow = [\"POS address\"] first; any "
                             "client could otherwise record sales and print claim QRs "
                             "(only loopback is served without it)")


class TapServer:
    """The running tap: a listener, a session per POS connection, the record worker."""

    def __init__(self, config: TapConfig, record: Record, *,
                 current_member: Callable[[], str | None] = lambda: None,
                 member_used: Callable[[str], None] | None = None,
                 on_job: Callable[[dict[str, Any]], None] | None = None,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.handler = ReceiptHandler(
            config.templates or resolve_templates(None), record, current_member=current_member,
            member_used=member_used, language=config.language, width=config.width,
            record_timeout=config.record_timeout_s)
        self.keeper = JobKeeper(config.folder / "jobs", config.keep_jobs, config.keep_bytes)
        self.on_job = on_job
        self.now = now
        self.clock = clock
        self.address: tuple[str, int] | None = None  # (host, port) once listening on TCP
        self.queue: PrintQueue | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._serial: SerialPipe | None = None
        self._n = 0
        self._allow = allowed_networks(config.allow)
        self.refused = 0  # connections from addresses not on the allow-list

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind the listen address and start serving; DeviceConfigError / OSError if it cannot."""
        check_listen(self.config.listen, self.config.allow)
        kind, target, arg = parse_listen(self.config.listen)
        self.handler.start()
        if any((self.config.folder / "spool").glob("*.job")):
            self._print_queue()  # jobs left from a printer that was offline: print them now
        if kind == "tcp":
            self._listener = socket.create_server((target, arg), reuse_port=False)
            self._listener.settimeout(0.2)
            self.address = self._listener.getsockname()[:2]
            self._spawn(self._accept, "tap-accept")
            log.info("print tap on tcp://%s:%d -> %s", *self.address, self.config.printer)
        else:
            self._serial = SerialPipe(open_serial(target, arg))
            self._spawn(self._session, "tap-serial", self._serial)
            log.info("print tap on %s -> %s", target, self.config.printer)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the jobs in progress, close everything; spooled jobs stay for the next start."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        deadline = self.clock() + timeout
        for t in list(self._threads):
            t.join(max(0.0, deadline - self.clock()))
        self.handler.stop()
        if self.queue is not None:
            self.queue.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Where the POS should print: tcp://HOST:PORT (the real port when 0 was asked)."""
        if self.address is None:
            return self.config.listen
        return f"tcp://{self.address[0]}:{self.address[1]}"

    # -- serving --------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            if not self.admits(peer[0]):
                with self._lock:
                    self.refused += 1
                log.warning("print tap: refused a connection from %s (not in [tap] allow)", peer[0])
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.debug("POS connected from %s:%d", *peer[:2])
            self._spawn(self._session, "tap-session", SocketPipe(conn))

    def admits(self, peer: str) -> bool:
        """Whether a POS at `peer` may print: any when listening on loopback without a list."""
        if not self._allow:
            return True  # check_listen made sure only loopback is listened on
        try:
            addr = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._allow)

    def _session(self, pos: Pipe) -> None:
        session = Session(
            pos, lambda: open_upstream(self.config.printer, self.config.connect_timeout_s),
            self.handler, on_job=self._job_done, new_job_id=self._job_id, stop=self._stop,
            settings=self.config.session, clock=self.clock)
        try:
            session.run()
        except Exception:
            # Last line of defence for one connection: the session already fails open inside;
            # anything reaching here is a bug, logged with its traceback, and the tap serves on.
            log.exception("tap session ended by an error")

    def _job_id(self) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        return f"{self.now():%Y%m%dT%H%M%S}-{n:04d}-{uuid.uuid4().hex[:6]}"

    def _print_queue(self) -> PrintQueue:
        with self._lock:
            if self.queue is None:
                self.queue = PrintQueue(self.config.folder / "spool", self.config.printer)
            return self.queue

    def _job_done(self, report: JobReport, raw: bytes, out: bytes) -> None:
        if not report.printed and self.config.offline == "spool":
            try:
                report.spooled = self._print_queue().submit(report.job, out)
            except (OSError, ValueError) as e:
                log.error("job %s could not be spooled: %s", report.job, e)
        if report.error or not report.parsed or not (report.printed or report.spooled):
            kept = self.keeper.keep(report.job, raw, report.to_dict())
            report.kept = str(kept) if kept else None
        if report.error:
            log.warning("job %s: %s", report.job, report.error)
        if self.on_job is not None:
            try:
                self.on_job(report.to_dict())
            except Exception:
                # A listener (the CLI's printer of JSON lines, the runtime's event hub) must not
                # take the proxy down with it.
                log.exception("tap on_job callback failed")


def start_tap(till_config: Any, record: Record, *,
              current_member: Callable[[], str | None] = lambda: None,
              member_used: Callable[[str], None] | None = None,
              on_job: Callable[[dict[str, Any]], None] | None = None) -> TapServer | None:
    """Start the tap the `[tap]` section of a TillConfig describes; None when there is none."""
    section = (getattr(till_config, "extra", None) or {}).get("tap")
    if not section or not section.get("listen"):
        return None
    config = tap_config(section, Path(till_config.data), default_printer=till_config.printer,
                        language=till_config.language)
    return TapServer(config, record, current_member=current_member, member_used=member_used,
                     on_job=on_job).start()
