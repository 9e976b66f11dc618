"""The agent's runtime: one object built by `setup()` and torn down by `shutdown()`.

Threads, and why each exists:
- the *writer*: every Service call (reads too: the store shares one SQLite connection) runs
  here, one at a time, in submission order. HTTP handlers and device threads submit work and
  wait on a Future; nothing else touches the database.
- one *reader* thread per scanner/camera (drivers' `DeviceReader`): a scan is handed to the
  writer and never waits for it.
- the *receipt spooler* (`receipts.ReceiptSpooler`): renders a committed sale's receipt and
  spools it (file write, fsync, rename), so the next sale never waits for those fsyncs. The
  sale's own transaction lists its receipt as due (meta `receipts_due`); a crash before the
  spool leaves it listed, and the next start queues it again (at least once, never lost).
- the *print queue* worker (drivers' `PrintQueue`): prints spooled receipts, so an unplugged
  printer never blocks or loses a sale.
- the optional *print tap* (`tillstamp.tap`, with `[tap] listen`): its threads proxy the POS's
  print jobs; the sales it reads are recorded through the writer like any other.
- the optional *sync* loop, when `[hq] url` is set and `tillstamp.sync` provides one.
Nothing starts at import time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tillstamp.drivers.errors import DeviceConfigError
from tillstamp.drivers.events import DeviceState, ScanEvent, StateEvent

from ..loyalty import tokens
from ..loyalty.sale import Sale
from .receipts import ReceiptSpooler, build_receipt, job_id
from .service import Refused, SaleResult
from .till import Till, open_till

log = logging.getLogger("tillstamp.agent")
T = TypeVar("T")
SCAN_TTL = 120.0  # seconds a scanned member stays "the last scan at this till"
# Seconds the cashier panel keeps showing a member nobody acted on: long enough to serve one
# customer, short enough that the next one in the queue does not see the last one's rewards.
PANEL_TTL = 180.0
RECEIPTS_DUE = "receipts_due"  # meta: [[seq, key], ...] receipts promised, maybe not spooled yet


class RuntimeStopped(RuntimeError):
    """The runtime is shutting down and takes no more work."""


class Writer:
    """The single writer: one thread runs submitted calls one at a time, in order."""

    def __init__(self, name: str = "tillstamp-writer") -> None:
        self._q: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Writer:
        """Start the thread."""
        self._thread.start()
        return self

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue `fn(*args, **kwargs)`; the Future holds its result or its exception."""
        if self._closed:
            raise RuntimeStopped("the agent is shutting down")
        fut: Future[T] = Future()
        self._q.put((lambda: fn(*args, **kwargs), fut))
        return fut

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the writer and wait for it (never from the writer thread itself)."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        return self.submit(fn, *args, **kwargs).result()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        self._closed = True
        self._q.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller, the writer lives on
                fut.set_exception(e)


class Subscription:
    """One listener of the event hub (an SSE client): a bounded queue of events."""

    def __init__(self, size: int = 256) -> None:
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue(size)
        self.dropped = 0

    def put(self, event: dict[str, Any] | None) -> None:
        """Hand over an event; a client too slow to keep up loses events rather than block."""
        try:
            self.q.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def get(self, timeout: float) -> dict[str, Any] | None:
        """The next event; raises queue.Empty after `timeout` seconds."""
        return self.q.get(timeout=timeout)


class EventHub:
    """Fans events (scans, awards, device changes) out to subscribers from any thread."""

    def __init__(self, keep: int = 50, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self._lock = threading.Lock()
        self._subs: set[Subscription] = set()
        self._n = 0
        self._now = now
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self.closed = False

    def publish(self, type_: str, /, **data: Any) -> dict[str, Any]:
        """Send an event of type `type_` to every subscriber; returns it."""
        with self._lock:
            self._n += 1
            event = {"id": self._n, "type": type_, "at": self._now().isoformat(), **data}
            self.recent.append(event)
            subs = list(self._subs)
        for s in subs:
            s.put(event)
        return event

    def subscribe(self, sub: Subscription | None = None) -> Subscription:
        """Add a subscription (a new queue unless given); call `unsubscribe` when the client goes."""
        sub = sub or Subscription()
        with self._lock:
            self._subs.add(sub)
            if self.closed:
                sub.put(None)
        return sub

    def subscribe_since(self, sub: Subscription,
                        last_id: int | None) -> tuple[list[dict[str, Any]], bool]:
        """Subscribe, and the kept events after `last_id` (a reconnecting client missed them).

        `last_id` None means the client's last id is from another run of the agent: it gets
        every kept event. Returns (events, complete): complete is False when some events it
        missed are no longer kept (only the last `keep`), so it should reload its state. Done
        under the hub's lock, so no event falls between the replay and the live stream.
        """
        with self._lock:
            after = 0 if last_id is None or last_id > self._n else last_id
            missed = [e for e in self.recent if e["id"] > after]
            forgotten = self._n - len(self.recent)  # ids up to this one are no longer kept
            complete = last_id is not None and last_id <= self._n and after >= forgotten
            self._subs.add(sub)
            if self.closed:
                sub.put(None)
        return missed, complete

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscription."""
        with self._lock:
            self._subs.discard(sub)

    def close(self) -> None:
        """End every stream (None is the end marker)."""
        with self._lock:
            self.closed = True
            subs = list(self._subs)
        for s in subs:
            s.put(None)


class LastScan:
    """The member scanned last at this till, for the next sale, until it expires."""

    def __init__(self, ttl: float = SCAN_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._member: str | None = None
        self._at = 0.0

    def set(self, member: str) -> None:
        """Remember `member` as just scanned."""
        with self._lock:
            self._member, self._at = member, self.clock()

    def peek(self) -> str | None:
        """The member scanned within the last `ttl` seconds, if any."""
        with self._lock:
            if self._member is not None and self.clock() - self._at > self.ttl:
                self._member = None
            return self._member

    def take(self, member: str) -> None:
        """Forget the scan once a sale used it, so the next customer starts clean."""
        with self._lock:
            if self._member == member:
                self._member = None

    def clear(self) -> None:
        """Forget whoever it is."""
        with self._lock:
            self._member = None

    def left(self) -> float:
        """Seconds until the member now held expires (0 when none)."""
        with self._lock:
            if self._member is None:
                return 0.0
            return max(0.0, self.ttl - (self.clock() - self._at))


@dataclass
class DeviceStatus:
    """What the agent knows about one device."""

    name: str
    url: str
    state: str = "closed"
    detail: str = ""
    since: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"url": self.url, "state": self.state, "detail": self.detail, "since": self.since}


@dataclass
class AgentOptions:
    """How to start the agent (from `tillstamp agent run` flags or a test)."""

    data: Path
    config: Path | None = None
    listen: str | None = None
    scan_ttl: float = SCAN_TTL
    panel_ttl: float = PANEL_TTL
    devices: bool = True
    print_flush_timeout: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime:
    """The running agent: till, writer, event hub, devices, print queue and sync loop."""

    def __init__(self, till: Till, options: AgentOptions) -> None:
        self.till = till
        self.options = options
        self.writer = Writer()
        self.hub = EventHub()
        self.last_scan = LastScan(options.scan_ttl)
        self.panel = LastScan(options.panel_ttl)  # who the cashier panel shows, until it expires
        self.panel_served: dict[str, Any] | None = None  # the last sale the panel's member got
        self.pending_claim: dict[str, Any] | None = None  # a receipt-claim QR scanned at the till
        self.devices: dict[str, DeviceStatus] = {}
        self.readers: list[Any] = []
        self.print_queue: Any = None
        self.receipts: ReceiptSpooler | None = None
        self.tap: Any = None  # a tillstamp.tap.TapServer when [tap] listen is set
        self.tap_jobs: dict[str, Any] = {"jobs": 0, "recorded": 0, "errors": 0, "last": None}
        self.sync: Any = None
        self._lock = threading.Lock()
        self._stopped = False
        self._due_written: str | None = None  # the receipts_due value last committed
        self.folder_lock: Any = None  # the data folder's AgentLock, set by setup()

    @property
    def panel_member(self) -> str | None:
        """The member the cashier panel shows (last scan, search or enrolment), if not expired."""
        return self.panel.peek()

    @panel_member.setter
    def panel_member(self, member: str | None) -> None:
        if member is None:
            self.panel.clear()
        else:
            self.panel.set(member)

    def served(self, receipt: str, member: str | None, stamps: int, balance: int | None) -> None:
        """A sale was recorded: the panel's member was served, the next customer starts clean."""
        self.panel_served = {"receipt": receipt, "member": member, "stamps": stamps,
                             "balance": balance}
        self.panel.clear()
        if member is not None:
            self.last_scan.take(member)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def listen(self) -> str:
        """HOST:PORT the POS API binds to."""
        return self.options.listen or self.till.config.listen

    def start(self) -> Runtime:
        """Start the writer, the devices and the sync loop (a missing device is only reported)."""
        self.writer.start()
        cfg = self.till.config
        if self.options.devices:
            if cfg.printer:
                self._start_printer(cfg.printer)
            for name, url in (("camera", cfg.camera), ("scanner", cfg.scanner)):
                if url:
                    self._start_reader(name, url)
            self._start_tap()
        self.sync = _start_sync(self)
        log.info("agent ready: store %s terminal %s", cfg.store, cfg.terminal)
        return self

    def _start_printer(self, url: str) -> None:
        from tillstamp.drivers.spool import PrintQueue

        self.devices["printer"] = DeviceStatus("printer", url)
        self.print_queue = PrintQueue(self.till.config.data / "spool", url,
                                      on_state=lambda e: self._on_state("printer", e))
        self.receipts = ReceiptSpooler(
            self.print_queue, width=printer_width(self.till.config.extra),
            on_error=self._print_failed,
            on_idle=self._store_due_later).start()
        self.writer.call(self._print_due)

    def _print_failed(self, receipt: str, error: str) -> None:
        self.hub.publish("print", receipt=receipt, error=error)

    def _start_tap(self) -> None:
        from tillstamp.tap import TapConfigError, service_record, start_tap

        section = self.till.config.extra.get("tap") or {}
        if not section.get("listen"):
            return
        self.devices["tap"] = DeviceStatus("tap", str(section["listen"]))
        record = service_record(self.till.service)
        try:
            self.tap = start_tap(self.till.config, lambda d: self.writer.call(self._tap_record, record, d),
                                 current_member=self.last_scan.peek, member_used=self.last_scan.take,
                                 on_job=self._tap_job)
        except (TapConfigError, DeviceConfigError, OSError) as e:
            # The POS API still takes sales; the tap needs a person (bad [tap] or port in use).
            log.error("print tap %s: %s", section["listen"], e)
            self._set_device("tap", DeviceState.FAILED.value, str(e))
            return
        if self.tap is None:
            return
        if "member_window_s" in section:
            self.last_scan.ttl = self.tap.config.member_window_s
        self.devices["tap"].url = self.tap.url
        self._set_device("tap", DeviceState.OPEN.value, f"-> {self.tap.config.printer}")

    def _tap_record(self, record: Callable[[dict[str, Any]], dict[str, Any]],
                    sale: dict[str, Any]) -> dict[str, Any]:
        """Record a sale the tap read (writer thread) and tell the panel, as for an API sale."""
        out = record(sale)
        if not out["duplicate"]:
            self.served(out["receipt"], out["member"], out["stamps_awarded"], out["balance"])
            self.hub.publish("sale", receipt=out["receipt"], member=out["member"], total=sale["total"],
                             stamps_awarded=out["stamps_awarded"], balance=out["balance"],
                             claim_stamps=out.get("claim_stamps", 0), missions=out.get("missions", []),
                             source="tap")
        return out

    def _tap_job(self, report: dict[str, Any]) -> None:
        with self._lock:
            self.tap_jobs["jobs"] += 1
            self.tap_jobs["recorded"] += bool(report.get("parsed") and report.get("receipt"))
            self.tap_jobs["errors"] += bool(report.get("error"))
            self.tap_jobs["last"] = report
        self.hub.publish("tap", **report)

    def _start_reader(self, name: str, url: str) -> None:
        from tillstamp.drivers.camera import camera_reader
        from tillstamp.drivers.scanner import scanner_reader

        self.devices[name] = DeviceStatus(name, url)
        make = camera_reader if name == "camera" else scanner_reader
        try:
            reader = make(url, self.on_scan, on_state=lambda e: self._on_state(name, e))
        except DeviceConfigError as e:
            # Misconfigured, not merely absent: report it; the till still takes sales.
            log.error("%s %s: %s", name, url, e)
            self._set_device(name, DeviceState.FAILED.value, str(e))
            return
        self.readers.append(reader.start())

    def shutdown(self) -> None:
        """Stop readers, flush the print queue, stop sync, drain the writer, close the database."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self.hub.close()
        if self.tap is not None:
            self.tap.stop()
        for reader in self.readers:
            reader.stop()
        if self.sync is not None:
            self.sync.stop()
        if self.receipts is not None:
            self.receipts.stop()  # every promised receipt into the spool...
            self.writer.call(self._store_due)  # ...and the ledger told so
        if self.print_queue is not None:
            if not self.print_queue.flush(self.options.print_flush_timeout):
                log.warning("printer not done: %d receipts stay spooled for the next start",
                            len(self.print_queue.pending()))
            self.print_queue.close()
        self.writer.stop()
        self.till.close()
        if self.folder_lock is not None:
            self.folder_lock.release()
        log.info("agent stopped")

    # -- devices --------------------------------------------------------------------------

    def _set_device(self, name: str, state: str, detail: str = "") -> None:
        with self._lock:
            dev = self.devices.setdefault(name, DeviceStatus(name, ""))
            changed = (dev.state, dev.detail) != (state, detail)
            dev.state, dev.detail = state, detail
            dev.since = dt.datetime.now(dt.UTC).isoformat()
        if changed:
            self.hub.publish("device", device=name, state=state, detail=detail)

    def _on_state(self, name: str, e: StateEvent) -> None:
        if e.state in (DeviceState.LOST, DeviceState.RETRYING, DeviceState.FAILED):
            log.warning("%s %s: %s", name, e.state.value, e.detail)
        self._set_device(name, e.state.value, e.detail)

    def on_scan(self, e: ScanEvent) -> None:
        """A reader thread saw a code: the writer works out what it is; this never blocks."""
        try:
            fut = self.writer.submit(self._scan, e.payload, e.source)
        except RuntimeStopped:
            log.info("scan ignored while stopping")
            return
        fut.add_done_callback(_log_failure)

    def _scan(self, payload: str, source: str) -> None:
        try:
            self.identify_scan(payload, source)
        except Refused as err:
            kind = "claim" if tokens.CLAIM_PREFIX in payload.upper() else "unknown"
            self.hub.publish("scan", kind=kind, source=source, error=err.reason, message=str(err))

    def identify_scan(self, payload: str, source: str, *, learn: bool = True) -> dict[str, Any]:
        """What a scanned or typed code is (writer thread): a member now current, or a claim offer.

        Raises `Refused` for a code that is neither; the event published is the answer too.
        """
        svc = self.till.service
        if tokens.CLAIM_PREFIX in payload.upper():
            try:
                tok = tokens.verify_claim(payload, svc.keys.terminal_keys, svc.now())
            except tokens.TokenError as err:
                raise Refused(f"token_{err.reason}", str(err)) from None
            used = svc.store.claim_used(tok.token_id)
            self.pending_claim = {"payload": payload, "receipt": tok.receipt, "stamps": tok.stamps}
            return self.hub.publish("scan", kind="claim", source=source, payload=payload,
                                    receipt=tok.receipt, stamps=tok.stamps, claimed=used is not None)
        row = svc.identify(payload, learn=learn)
        self.last_scan.set(row.id)
        self.panel_member = row.id
        return self.hub.publish("scan", kind="member", source=source, member=row.id, name=row.name)

    # -- sales and printing ---------------------------------------------------------------

    def record_sale(self, sale: Sale) -> SaleResult:
        """Record a sale (writer thread); with a printer, its receipt is due in the same commit."""
        store = self.till.store
        due = None
        with store.write():
            result = self.till.service.record_sale(sale)
            if self.receipts is not None and not result.duplicate:
                # No extra fsync: the promise rides in the sale's own transaction.
                due = json.dumps(self.receipts.due() + [(result.seq, result.key)])
                store.set_meta(RECEIPTS_DUE, due)
        if due is not None and self.receipts is not None:
            self.receipts.expect(result.seq, result.key)
            self._due_written = due
        return result

    def _build(self, key: str, result: SaleResult | None, copy: bool = False) -> Any:
        cfg = self.till.config
        return build_receipt(self.till.service, key, store_name=cfg.store_name or cfg.store,
                             language=cfg.language, result=result, copy=copy)  # type: ignore[arg-type]

    def queue_receipt(self, key: str, job: str, result: SaleResult | None = None) -> bool:
        """Spool a reprint of sale `key` now, marked as a copy (writer thread); False without a printer."""
        if self.print_queue is None:
            return False
        from tillstamp.drivers.receipt import render_receipt

        receipt = self._build(key, result, copy=True)
        self.print_queue.submit(job, render_receipt(receipt, width=printer_width(self.till.config.extra)))
        return True

    def print_after_sale(self, key: str, seq: int, result: SaleResult | None) -> None:
        """Hand a just-committed sale's receipt to the spooler; a failure is logged, never the sale's."""
        if self.receipts is None:
            return
        try:
            receipt = self._build(key, result)
        except (Refused, ValueError) as e:
            # The sale is committed and acknowledged: a receipt problem must not undo that.
            log.error("receipt for %s not queued: %s", key, e)
            self.hub.publish("print", receipt=result.receipt if result else key, error=str(e))
            self.receipts.forget(seq)  # it cannot be drawn from this ledger: nothing to retry
            return
        self.receipts.submit(seq, job_id("sale", seq), receipt)

    def _print_due(self) -> None:
        """Queue again the receipts a crash left between their sale's commit and the spool."""
        spooler = self.receipts
        if spooler is None:
            return
        raw = self.till.store.get_meta(RECEIPTS_DUE)
        self._due_written = raw
        try:
            due = [(int(seq), str(key)) for seq, key in json.loads(raw or "[]")]
        except (ValueError, TypeError) as e:
            log.error("meta %s unreadable (%s): receipts it listed are not reprinted", RECEIPTS_DUE, e)
            return
        for seq, key in due:
            # The job may still be in the spool (then this adds nothing) or printed already
            # (then it prints again): at least once, never lost.
            log.warning("receipt of sale %s was not known spooled at the last stop: queued again", key)
            spooler.expect(seq, key)
            self.print_after_sale(key, seq, None)

    def _store_due(self) -> None:
        """Commit the receipts still due (writer thread), when it changed since the last commit."""
        if self.receipts is None:
            return
        value = json.dumps(self.receipts.due())
        if value == self._due_written:
            return
        with self.till.store.write():
            self.till.store.set_meta(RECEIPTS_DUE, value)
        self._due_written = value

    def _store_due_later(self) -> None:
        try:
            self.writer.submit(self._store_due).add_done_callback(_log_failure)
        except RuntimeStopped:
            return  # shutdown stores it itself

    def flush_prints(self, timeout: float = 10.0) -> bool:
        """Wait until every receipt is rendered, spooled and printed; False after `timeout`."""
        deadline = time.monotonic() + timeout
        if self.receipts is not None and not self.receipts.flush(timeout):
            return False
        if self.print_queue is None:
            return True
        return bool(self.print_queue.flush(max(0.0, deadline - time.monotonic())))

    def reprint_job(self, seq: int) -> str:
        """A fresh job id for a reprint (a reprint must not be merged with the first print)."""
        return f"reprint-{seq}-{uuid.uuid4().hex[:8]}"

    # -- health ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Devices, print queue and outbox (call on the writer: it reads the store)."""
        store = self.till.store
        acked = _sync_acked(self)
        with self._lock:
            devices = {n: d.to_dict() for n, d in self.devices.items()}
        for name, url in (("camera", self.till.config.camera), ("scanner", self.till.config.scanner),
                          ("printer", self.till.config.printer)):
            devices.setdefault(name, {"url": url, "state": "none" if not url else "closed",
                                      "detail": "", "since": ""})
        pending = self.print_queue.pending() if self.print_queue is not None else []
        rendering = self.receipts.pending() if self.receipts is not None else 0
        return {
            "status": "ok",
            "store": self.till.config.store,
            "terminal": self.till.config.terminal,
            "devices": devices,
            "print_queue": {"pending": len(pending) + rendering, "printer": self.till.config.printer or None},
            "outbox": {"last_seq": store.last_seq, "acked": acked, "waiting": store.last_seq - acked,
                       "sync": _sync_state(self.sync)},
            "last_scan": self.last_scan.peek(),
            "tap": self._tap_health(),
        }

    def _tap_health(self) -> dict[str, Any] | None:
        dev = self.devices.get("tap")
        if dev is None:
            return None
        with self._lock:
            stats = dict(self.tap_jobs)
        spool = self.tap.queue.pending() if self.tap is not None and self.tap.queue is not None else []
        return {"listen": dev.url, "state": dev.state, "detail": dev.detail,
                "printer": self.tap.config.printer if self.tap is not None else None,
                "member_window_s": self.last_scan.ttl, "spooled": len(spool), **stats}


def _log_failure(fut: Future[Any]) -> None:
    # Nobody waits on this Future (a scan, storing the due receipts): a bug must still be logged.
    error = fut.exception()
    if error is not None:
        log.error("background writer call failed", exc_info=error)


def printer_width(raw: dict[str, Any]) -> int:
    """Receipt width in columns from `[devices] printer_width` (48 = 80 mm paper)."""
    width = raw.get("devices", {}).get("printer_width", 48)
    return width if width in (32, 42, 48) else 48


def _sync_state(loop: Any) -> str:
    """off (no HQ), offline (last round failed or none yet) or online."""
    if loop is None:
        return "off"
    return "online" if loop.rounds > 0 and loop.last_error is None else "offline"


class _OnWriter:
    """Runs every method of `target` on the writer: the sync thread never touches SQLite itself."""

    def __init__(self, target: Any, writer: Writer) -> None:
        self._target = target
        self._writer = writer
        self.terminal = target.terminal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: self._writer.call(attr, *a, **kw)


def _start_sync(rt: Runtime) -> Any:
    """Start the sync loop when tillstamp.toml has [hq] url and this build has the sync module."""
    till = rt.till
    if not till.config.hq_url:
        return None
    try:
        from . import sync_store
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("tillstamp"):
            raise
        log.warning("[hq] url is set but this build has no sync module; events wait in the outbox")
        return None
    sync = getattr(till, "sync", None)
    if sync is None:
        return None
    outbox = _OnWriter(sync, rt.writer)
    # _OnWriter has SyncStore's methods, run on the writer thread; it is not a subclass.
    client = sync_store.client_for(till.store, till.keys, outbox, till.config.hq_url)  # type: ignore[arg-type]
    loop = sync_store.SyncLoop(client).start()
    log.info("sync with %s started", till.config.hq_url)
    return loop


def _sync_acked(rt: Runtime) -> int:
    sync = getattr(rt.till, "sync", None)
    return sync.acked() if sync is not None else 0


def setup(options: AgentOptions) -> Runtime:
    """Open the till and start the agent's threads; AlreadyRunning if an agent holds the folder."""
    from .lock import AgentLock

    # A missing folder is open_till's to report (not initialised); there is nothing to lock.
    lock = AgentLock(options.data).acquire() if Path(options.data).is_dir() else None
    try:
        till = open_till(options.data, config=options.config)
        rt = Runtime(till, options)
        rt.folder_lock = lock
        return rt.start()
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def shutdown(rt: Runtime) -> None:
    """Tear down what `setup` built."""
    rt.shutdown()
