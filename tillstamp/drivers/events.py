"""Events the reader threads report: scans and device state changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum


class DeviceState(str, Enum):
    """Lifecycle state of a device watched by a reader thread."""

    OPENING = "opening"
    OPEN = "open"
    LOST = "lost"
    RETRYING = "retrying"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True)
class ScanEvent:
    """One scan: the decoded payload, the device URL it came from, and when."""

    payload: str
    source: str
    at: datetime


@dataclass(frozen=True)
class StateEvent:
    """A device changed state; `detail` says why (the error text for lost/failed)."""

    source: str
    state: DeviceState
    detail: str = ""
    retry_in: float | None = None


ScanCallback = Callable[[ScanEvent], None]
StateCallback = Callable[[StateEvent], None]


def utc_now() -> datetime:
    """Aware UTC now; the default wall clock for scan timestamps."""
    return datetime.now(UTC)
