"""The seam between the tap and the till's Service: `record(sale_dict) -> result dict`.

The tap never holds a Service itself. `tillstamp tap run` passes `service_record(service)`,
which the tap's single worker thread calls one at a time; the agent passes a callable that
hands the same function to its writer thread (`lambda d: rt.writer.call(rec, d)`).
`MemberWindow` is "who was scanned at this till in the last N seconds" for a runtime that
wants the tap's own window rather than its last-scan memory.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from tillstamp.loyalty.sale import Sale, parse_sale
from tillstamp.tap.handler import Record


class _Result(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class SaleService(Protocol):
    """What the tap needs of `agent.service.Service`."""

    def now(self) -> dt.datetime: ...
    def record_sale(self, sale: Sale) -> _Result: ...


def service_record(service: SaleService) -> Record:
    """A `record` callable over a Service: validate, record exactly once, return the result."""

    def record(sale: dict[str, Any]) -> dict[str, Any]:
        return service.record_sale(parse_sale(sale, now=service.now())).to_dict()

    return record


class MemberWindow:
    """The member identified at this till within the last `window_s` seconds, if any."""

    def __init__(self, window_s: float = 120.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._member: str | None = None
        self._at = 0.0

    def seen(self, member: str) -> None:
        """A member QR was scanned now."""
        with self._lock:
            self._member, self._at = member, self.clock()

    def __call__(self) -> str | None:
        """The member, while the scan is recent enough."""
        with self._lock:
            if self._member is not None and self.clock() - self._at > self.window_s:
                self._member = None
            return self._member

    def take(self, member: str) -> None:
        """Forget the member once a receipt used it."""
        with self._lock:
            if self._member == member:
                self._member = None
