"""One POS connection proxied to the printer, both ways at once.

POS -> printer: bytes are forwarded as they arrive; only at a cut command does the session
stop, read the receipt printed since the previous cut, record it, and send the loyalty block
before letting the cut through. Printer -> POS: a relay thread copies whatever the printer
says (status answers, automatic status back) as it comes, so a POS waiting on a status query
never stalls behind us.

Job boundaries: a job ends when, after a cut (and no text since), the POS is silent for
`cut_idle` seconds; or after `idle` seconds of silence without a cut; or when the POS closes
the connection. A receipt without any cut is read at the end of its job and its block is
appended after it.

Failing open: every step after "forward the bytes" may fail (no template matches, the
Service refuses, a bug here); the bytes are forwarded regardless and the job is reported with
its error. If the session's own bookkeeping fails it stops interpreting and forwards the rest
of the connection raw.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tillstamp.drivers.errors import DeviceError, DeviceUnavailable
from tillstamp.drivers.escpos_decode import decode
from tillstamp.tap.extract import NoMatch
from tillstamp.tap.framing import Framer, Mark
from tillstamp.tap.handler import ReceiptHandler, RecordError
from tillstamp.tap.jobs import JobReport
from tillstamp.tap.ports import Pipe, SocketPipe
from tillstamp.tap.template import TemplateError

log = logging.getLogger("tillstamp.tap")


@dataclass(frozen=True)
class SessionSettings:
    """Timing and size limits of a session."""

    cut_idle: float = 0.3  # silence after a cut that ends the job
    idle: float = 5.0  # silence that ends a job without a cut
    stall: float = 30.0  # silence inside a command before the job is ended anyway
    poll: float = 0.05  # how often an idle session looks at the clock and the stop flag
    linger: float = 1.0  # after the POS closes, how long printer answers are still relayed
    max_job_bytes: int = 32_000_000  # beyond this a job is forwarded raw, not read
    # More text than this between two cuts is a report, not a receipt: not decoded, so a long
    # report never waits on the decoder before its cut (a receipt has a few KB of text).
    max_receipt_text: int = 64_000


def local_status(cmd: bytes, online: bool) -> bytes:
    """The answer a printer would give to a status query, for when it cannot answer itself.

    DLE EOT 1 bit 3 is "offline"; DLE EOT 2/3 bit 6 "error"; paper is reported present (we
    cannot know). GS r answers 0 (paper and drawer fine). GS a n (automatic status back)
    gets one 4-byte status, offline bit set when the printer is unreachable.
    """
    if cmd[:2] == b"\x10\x04" and len(cmd) >= 3:
        n = cmd[2]
        if n == 1:
            return bytes([0x12 | (0 if online else 0x08)])
        if n in (2, 3):
            return bytes([0x12 | (0 if online else 0x40)])
        return b"\x12"
    if cmd[:2] == b"\x1dr":
        return b"\x00"
    if cmd[:2] == b"\x1da" and len(cmd) >= 3 and cmd[2]:
        return b"\x10\x00\x00\x00" if online else b"\x18\x40\x00\x00"
    return b""


@dataclass
class _Job:
    report: JobReport
    base: int  # absolute offset of the job's first byte
    seg: int  # absolute offset where the current receipt (segment) starts
    page: bytes  # code page in force at `seg`
    raw: bytearray = field(default_factory=bytearray)
    # What the printer gets is `raw` with these blocks inserted (offsets into raw); built only
    # when a job must be spooled, so a large job is not copied a second time.
    blocks: list[tuple[int, bytes]] = field(default_factory=list)
    last_at: float = 0.0
    cuts: int = 0
    keys: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def out(self, raw: bytes) -> bytes:
        """What the printer gets: `raw` (this job's bytes) with the blocks inserted."""
        if not self.blocks:
            return raw
        parts, at = [], 0
        for offset, block in self.blocks:
            parts += [raw[at:offset], block]
            at = offset
        parts.append(raw[at:])
        return b"".join(parts)


JobDone = Callable[[JobReport, bytes, bytes], None]


class Session:
    """Proxies one POS pipe to a printer pipe; `run()` returns when the POS goes away or on stop."""

    def __init__(self, pos: Pipe, open_printer: Callable[[], Pipe], handler: ReceiptHandler, *,
                 on_job: JobDone, new_job_id: Callable[[], str], stop: threading.Event,
                 settings: SessionSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pos = pos
        self.open_printer = open_printer
        self.handler = handler
        self.on_job = on_job
        self.new_job_id = new_job_id
        self.stop = stop
        self.settings = settings or SessionSettings()
        self.clock = clock
        self.framer = Framer()
        self.printer: Pipe | None = None
        self.offline_reason = ""
        self.passthrough = False
        self.total_in = 0  # bytes received from the POS on this connection
        self.sent = 0  # of those, bytes forwarded (or spooled) so far
        self._chunk = b""  # the chunk being taken, and its offset: forwarded whole if it can be
        self._chunk_at = 0
        self.job: _Job | None = None
        self._relay: threading.Thread | None = None
        self._relay_stop = threading.Event()
        self._send_lock = threading.Lock()  # the POS pipe is written by two threads

    # -- connection ---------------------------------------------------------------------
    def run(self) -> None:
        """Serve the connection until the POS closes it or the tap stops."""
        self._connect()
        try:
            while True:
                if self.stop.is_set():
                    break
                chunk = self.pos.recv(self.settings.poll)
                if chunk == b"":
                    break
                if chunk is None:
                    self._maybe_idle()
                else:
                    self._take(chunk)
            self._end_job()
        finally:
            self._close()

    def _connect(self) -> None:
        try:
            self.printer = self.open_printer()
        except DeviceError as e:
            self.printer, self.offline_reason = None, str(e)
            log.warning("printer unavailable: %s", e)
            return
        self.offline_reason = ""
        if self.printer.duplex:
            self._relay_stop.clear()
            self._relay = threading.Thread(target=self._relay_run, args=(self.printer,),
                                           name="tap-relay", daemon=True)
            self._relay.start()

    def _relay_run(self, printer: Pipe) -> None:
        while not self._relay_stop.is_set():
            data = printer.recv(self.settings.poll)
            if data is None:
                continue
            if data == b"":
                return  # the printer closed its side
            try:
                self._to_pos(data)
            except DeviceUnavailable:
                return  # the POS is gone; the main loop will see it too

    def _to_pos(self, data: bytes) -> None:
        with self._send_lock:
            self.pos.send(data)

    def _close(self) -> None:
        printer, self.printer = self.printer, None
        if printer is not None:
            if isinstance(printer, SocketPipe):
                printer.shutdown_write()
            if self._relay is not None:
                self._relay.join(self.settings.linger)  # the printer's last answers
            self._relay_stop.set()
            printer.close()
        if self._relay is not None:
            self._relay.join(1.0)
        self.pos.close()

    def _lose_printer(self, e: Exception) -> None:
        log.warning("printer lost mid-job: %s", e)
        self.offline_reason = str(e)
        self._relay_stop.set()
        printer, self.printer = self.printer, None
        if printer is not None:
            printer.close()
        if self.job is not None:
            self.job.report.printed = False

    # -- bytes in -----------------------------------------------------------------------
    def _take(self, chunk: bytes) -> None:
        job = self.job or self._new_job()
        job.raw += chunk
        job.last_at = self.clock()
        self._chunk, self._chunk_at = chunk, self.total_in
        self.total_in += len(chunk)
        job.report.bytes_in += len(chunk)
        if self.passthrough:
            self._forward_to(self.total_in)
            return
        if len(job.raw) > self.settings.max_job_bytes:
            self._fail_open(f"job larger than {self.settings.max_job_bytes} bytes: not read")
            return
        try:
            safe, marks = self.framer.feed(chunk)
            for mark in marks:
                if mark.kind == "cut":
                    self._forward_to(mark.offset)
                    self._receipt_end(mark)
                elif self.printer is None or not self.printer.duplex:
                    self._forward_to(mark.offset + len(mark.data))
                    answer = local_status(mark.data, online=self.printer is not None)
                    if answer:
                        self._to_pos(answer)
            self._forward_to(safe)
        except Exception as e:
            # The proxy must keep printing whatever goes wrong in our own code: log it with its
            # traceback and forward the rest of this connection untouched.
            log.exception("tap failed while reading a job; forwarding it unchanged")
            self._fail_open(f"internal error: {e!r}")

    def _fail_open(self, why: str) -> None:
        self.passthrough = True
        if self.job is not None:
            self.job.errors.append(why)
        self._forward_to(self.total_in)

    def _new_job(self) -> _Job:
        if self.printer is None:
            self._connect()  # the printer may be back
        report = JobReport(self.new_job_id())
        if self.printer is None:
            report.printed = False
            report.error = f"printer offline: {self.offline_reason}"
        self.job = _Job(report, base=self.total_in, seg=self.total_in, page=self.framer.page())
        return self.job

    def _maybe_idle(self) -> None:
        job = self.job
        if job is None:
            return
        after_cut = job.cuts > 0 and not self.framer.text_since_cut
        limit = self.settings.cut_idle if after_cut else self.settings.idle
        # A POS may pause inside a command (a cut split across two writes): ending the job
        # there would carry the rest of the command into the next job and misplace its block.
        stuck = self.framer.mid_command
        if stuck:
            limit = max(limit, self.settings.stall)
        if self.clock() - job.last_at >= limit:
            if stuck:
                self.framer.abandon_command()
            self._end_job()

    # -- bytes out ----------------------------------------------------------------------
    def _forward_to(self, offset: int) -> None:
        job = self.job
        if job is None or offset <= self.sent:
            return
        if self.sent == self._chunk_at and offset == self.total_in:
            data = self._chunk  # the common case: all of what just came, without a copy
        else:
            data = bytes(memoryview(job.raw)[self.sent - job.base : offset - job.base])
        self.sent = offset
        self._send(data)

    def _send(self, data: bytes) -> None:
        job = self.job
        assert job is not None
        job.report.bytes_out += len(data)
        if self.printer is not None:
            try:
                self.printer.send(data)
            except DeviceError as e:
                self._lose_printer(e)

    # -- receipts -----------------------------------------------------------------------
    def _receipt_end(self, cut: Mark | None) -> None:
        """A receipt ends here (at `cut`, or at the end of a job): read it, insert its block."""
        job = self.job
        assert job is not None
        start, end = job.seg, cut.offset if cut is not None else self.total_in
        text = cut.text if cut is not None else self.framer.text_bytes
        page = job.page
        if cut is not None:
            job.cuts += 1
            job.seg = cut.offset + len(cut.data)
            job.page = next((s for s in cut.state if s[:2] == b"\x1bt"), b"")
        if text > self.settings.max_receipt_text:
            job.errors.append(f"not read: {text} bytes of text is too long for a receipt")
            return
        data = page + memoryview(job.raw)[start - job.base : end - job.base]
        try:
            lines = decode(data).text
            if not any(s.strip() for s in lines):
                return  # no text since the last cut (a logo, a feed): not a receipt
            outcome = self.handler.handle(
                lines, restore=b"".join(cut.state) if cut else self.framer.page(),
                new_line=cut.mid_line if cut else self.framer.mid_line)
        except NoMatch as e:
            job.errors.append(f"not read: {e}")
            return
        except (RecordError, TemplateError) as e:
            log.warning("receipt not recorded: %s", e)
            job.errors.append(str(e))
            return
        except Exception as e:
            # A bug in reading or rendering must never cost the POS its receipt: log it with
            # the traceback and let the receipt print as it came.
            log.exception("tap failed on a receipt; it prints unchanged")
            job.errors.append(f"internal error: {e!r}")
            return
        self._note(job, outcome.parsed.key, outcome.parsed.total, outcome.parsed.template,
                   outcome.result, outcome.block)

    def _note(self, job: _Job, key: str, total: int, template: str, result: dict[str, Any],
              block: bytes) -> None:
        r = job.report
        entry: dict[str, Any] = {"receipt": key, "total": total, "template": template,
                 "duplicate": bool(result.get("duplicate")), "member": result.get("member"),
                 "stamps": int(result.get("stamps_awarded") or 0), "claim": result.get("claim")}
        # A second copy of the same receipt in one job (the merchant's copy) gets no block.
        entry["inserted"] = bool(block) and key not in job.keys
        job.keys.add(key)
        if entry["inserted"]:
            job.blocks.append((self.sent - job.base, block))
            self._send(block)
        r.receipts.append(entry)
        if len(r.receipts) == 1:
            r.parsed = True
            r.receipt, r.total, r.template = key, total, template
            r.duplicate, r.member, r.stamps = entry["duplicate"], entry["member"], entry["stamps"]
            r.claim, r.inserted = entry["claim"], entry["inserted"]

    def _end_job(self) -> None:
        job = self.job
        if job is None:
            return
        try:
            self._forward_to(self.total_in)  # a command header held back, if any
            if not self.passthrough and job.cuts == 0 and job.report.bytes_in:
                self._receipt_end(None)  # a receipt without a cut: its block goes after it
        except Exception as e:
            # Same rule as in _take: the job is already printed; report, never crash the session.
            log.exception("tap failed finishing a job")
            job.errors.append(f"internal error: {e!r}")
        if job.errors:
            job.report.error = "; ".join(e for e in [job.report.error, *job.errors] if e)
        self.job = None
        # A connection that only asked for status (DLE EOT) printed nothing: not a job.
        if job.cuts or self.framer.last_text >= job.base or job.report.parsed:
            raw = bytes(job.raw)
            self.on_job(job.report, raw, job.out(raw))
