"""The reader thread shared by camera and scanner: open, poll, report, reopen with backoff."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, Self

from tillstamp.drivers.backoff import Backoff
from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.events import (
    DeviceState,
    ScanCallback,
    ScanEvent,
    StateCallback,
    StateEvent,
    utc_now,
)

log = logging.getLogger(__name__)


class SourceExhausted(Exception):
    """A finite source (a replayed video, a folder of stills) has nothing more to give."""


class Session(Protocol):
    """An opened device the reader polls for payloads."""

    def poll(self) -> list[str]: ...
    def close(self) -> None: ...


class Debouncer:
    """Reports a payload once while it keeps being seen within `window` seconds."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        self.window = window
        self.clock = clock
        self._last_seen: dict[str, float] = {}

    def accept(self, payload: str) -> bool:
        """True for a new scan; False for the same code still in view."""
        now = self.clock()
        last = self._last_seen.get(payload)
        self._last_seen[payload] = now
        # Forget old codes so the table stays small on a till that runs for months.
        for key in [k for k, t in self._last_seen.items() if now - t > self.window]:
            del self._last_seen[key]
        return last is None or now - last > self.window


class DeviceReader:
    """Polls a device in its own thread, calling `on_scan` per scan and `on_state` per change."""

    def __init__(self, source: str, opener: Callable[[], Session], on_scan: ScanCallback, *,
                 on_state: StateCallback | None = None, debouncer: Debouncer | None = None,
                 backoff: Backoff | None = None, wait: Callable[[float], object] | None = None,
                 now: Callable[[], datetime] = utc_now) -> None:
        self.source = source
        self._opener = opener
        self._on_scan = on_scan
        self._on_state = on_state
        self._debouncer = debouncer
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait  # interruptible by stop() unless injected
        self._now = now
        self.state = DeviceState.CLOSED
        self._thread = threading.Thread(target=self._run, name=f"reader {source}", daemon=True)

    def start(self) -> Self:
        """Start the thread."""
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to finish and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs (a finite source ends it by itself)."""
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread (it ends by itself when a finite source runs out)."""
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _report(self, state: DeviceState, detail: str = "", retry_in: float | None = None) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(StateEvent(self.source, state, detail, retry_in))

    def _emit(self, payload: str) -> None:
        if self._debouncer is not None and not self._debouncer.accept(payload):
            return
        try:
            self._on_scan(ScanEvent(payload, self.source, self._now()))
        except Exception:
            # A failing consumer must not kill the device thread; it is logged, not hidden.
            log.exception("scan callback failed for %s", self.source)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._report(DeviceState.OPENING)
            try:
                session = self._opener()
            except DeviceConfigError as e:
                self._report(DeviceState.FAILED, str(e))
                return
            except DeviceUnavailable as e:
                delay = self._backoff.next_delay()
                self._report(DeviceState.RETRYING, str(e), delay)
                self._wait(delay)
                continue
            self._backoff.reset()
            self._report(DeviceState.OPEN)
            try:
                self._poll(session)
            except SourceExhausted:
                self._stop.set()
            except DeviceUnavailable as e:
                log.warning("%s lost: %s", self.source, e)
                self._report(DeviceState.LOST, str(e))
            finally:
                session.close()
        self._report(DeviceState.CLOSED)

    def _poll(self, session: Session) -> None:
        while not self._stop.is_set():
            for payload in session.poll():
                self._emit(payload)
