"""A durable print queue: jobs are files in a spool directory, printed by a worker thread.

A job file is written to `tmp/`, fsynced and renamed into place, and removed only after the
printer took all its bytes (and, where the port reads back, answered a status query after
them). A printer that is offline, out of paper or unplugged is retried with exponential
backoff and jitter; `submit` never waits for it. Delivery is at least once: a link that
breaks mid-job reprints the whole job rather than lose it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Self

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.events import DeviceState, StateCallback, StateEvent
from tillstamp.drivers.printer import Printer, open_printer

log = logging.getLogger(__name__)
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Job files in a directory, named `<seq>-<job_id>.job` so they print in order."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _jobs(self) -> list[Path]:
        return sorted(self.dir.glob("*.job"))

    def add(self, job_id: str, data: bytes) -> bool:
        """Store a job durably; False when a job with this id is already waiting."""
        if not _JOB_ID.match(job_id):
            raise ValueError(f"job id {job_id!r} must be 1-128 of [A-Za-z0-9._-]")
        with self._lock:
            jobs = self._jobs()
            if any(p.stem.split("-", 1)[1] == job_id for p in jobs):
                return False
            seq = int(jobs[-1].stem.split("-", 1)[0]) + 1 if jobs else 1
            tmp = self.tmp / f"{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / f"{seq:012d}-{job_id}.job")
            _fsync_dir(self.dir)
        return True

    def pending(self) -> list[str]:
        """Ids of the jobs not yet printed, oldest first."""
        return [p.stem.split("-", 1)[1] for p in self._jobs()]

    def oldest(self) -> Path | None:
        """The next job file to print."""
        jobs = self._jobs()
        return jobs[0] if jobs else None

    def done(self, path: Path) -> None:
        """Forget a printed job."""
        path.unlink(missing_ok=True)
        _fsync_dir(self.dir)


class PrintQueue:
    """Prints spooled jobs on `printer_url` from a worker thread; submit never blocks on I/O."""

    def __init__(self, spool_dir: str | Path, printer_url: str, *,
                 on_state: StateCallback | None = None,
                 sleep: Callable[[float], None] | None = None,
                 opener: Callable[[str], Printer] = open_printer,
                 initial_wait: float = 0.5, max_wait: float = 30.0,
                 check_status: bool = True, start: bool = True) -> None:
        self.spool = Spool(spool_dir)
        self.url = printer_url
        self._on_state = on_state
        self._opener = opener
        self._check_status = check_status
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._sleep = sleep or self._stop.wait  # the default wait wakes up on close()
        # Exponential from `initial_wait`, capped, plus jitter so many tills do not retry in step.
        self._wait = wait_exponential(multiplier=initial_wait, max=max_wait) + wait_random(
            0, initial_wait)
        self._state: DeviceState | None = None
        self._thread = threading.Thread(target=self._run, name=f"print-queue {printer_url}",
                                        daemon=True)
        if start:
            self._thread.start()

    def submit(self, job_id: str, data: bytes) -> bool:
        """Spool a job (durably) and wake the worker; False if `job_id` is already queued."""
        added = self.spool.add(job_id, data)
        with self._cond:
            self._cond.notify_all()
        return added

    def pending(self) -> list[str]:
        """Ids of jobs still waiting to print."""
        return self.spool.pending()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every job is printed; True if the spool emptied within `timeout`."""
        with self._cond:
            return self._cond.wait_for(lambda: not self.spool.pending() or self._stop.is_set(),
                                       timeout) and not self.spool.pending()

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker; jobs not yet printed stay in the spool for the next start."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._report(DeviceState.CLOSED)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ---------------------------------------------------------------------------
    def _report(self, state: DeviceState, detail: str = "", retry_in: float | None = None) -> None:
        if state == self._state and state != DeviceState.RETRYING:
            return
        self._state = state
        if self._on_state is not None:
            self._on_state(StateEvent(self.url, state, detail, retry_in))

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.spool.oldest()
            if job is None:
                with self._cond:
                    self._cond.notify_all()  # flush() waiters
                    self._cond.wait_for(lambda: self._stop.is_set() or self.spool.oldest(), 1.0)
                continue
            try:
                self._print_with_retry(job)
            except DeviceConfigError as e:
                # Retrying a bad URL helps nobody; the job stays spooled for a fixed config.
                log.error("printer %s misconfigured: %s", self.url, e)
                self._report(DeviceState.FAILED, str(e))
                return
            except DeviceUnavailable:
                return  # only reached when closing during a retry
        with self._cond:
            self._cond.notify_all()

    def _before_sleep(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else None
        log.warning("printer %s not ready (%s); retry in %.1fs", self.url, error, delay or 0)
        self._report(DeviceState.RETRYING, str(error), delay)

    def _print_with_retry(self, job: Path) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(DeviceUnavailable),
            wait=self._wait,
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep,  # type: ignore[arg-type]  # time.sleep or Event.wait: both take seconds
            before_sleep=self._before_sleep,
            reraise=True,
        )
        retrying(self._print_once, job)

    def _print_once(self, job: Path) -> None:
        try:
            data = job.read_bytes()
        except FileNotFoundError:
            return  # removed behind our back (a second queue on the same spool): nothing to do
        with self._opener(self.url) as printer:
            if self._check_status:
                status = printer.status()
                if not status.ready:
                    what = "out of paper" if status.paper == "out" else "offline"
                    raise DeviceUnavailable(f"printer {what}")
            printer.write(data)
            if self._check_status:
                printer.status()  # an answer after the job means the link carried all of it
        self.spool.done(job)
        self._report(DeviceState.OPEN)
        with self._cond:
            self._cond.notify_all()
