"""Fixtures for sync tests: an HQ in process, tills enrolled with it, a settable clock."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tillstamp.agent.enroll import init_with_hq
from tillstamp.agent.sync_store import client_for
from tillstamp.agent.till import Till, open_till
from tillstamp.hq.app import create_app
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.loyalty.sale import Sale, parse_sale
from tillstamp.sync.client import RetryPolicy, SyncClient
from tillstamp.sync.transport import InProcessTransport

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "examples" / "program.toml"
T0 = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)  # a Monday, 10:00 in Jakarta


def program_source(**offline: int) -> dict[str, Any]:
    """The example program, with the offline caps overridden."""
    src = tomllib.loads(PROGRAM.read_text(encoding="utf-8"))
    src.setdefault("offline", {}).update(offline)
    return src


@dataclass
class Clock:
    """A settable clock (aware UTC)."""

    now: dt.datetime = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += dt.timedelta(**kw)


@dataclass
class TillHandle:
    """A till enrolled with the in-process HQ, with its own clock and client."""

    data: Path
    till: Till
    clock: Clock
    client: SyncClient
    sleeps: list[float] = field(default_factory=list)

    @property
    def service(self) -> Any:
        return self.till.service

    def close(self) -> None:
        self.till.close()


class HqHarness:
    """HQ over a storage URL, its ASGI app and an in-process transport."""

    def __init__(self, url: str, clock: Clock):
        self.clock = clock
        self.hq = Hq(open_hq_store(url), clock=clock)
        self.app = create_app(self.hq)
        self.transport = InProcessTransport(self.app)
        self.tills: list[TillHandle] = []

    def publish(self, **offline: int) -> int:
        return self.hq.publish_program(program_source(**offline))

    def till(self, root: Path, name: str, store: str, *, transport: Any = None, **client_kw: Any) -> TillHandle:
        data = root / name
        code = self.hq.new_code(store)
        init_with_hq(data, hq="http://hq.test", code=code, transport=transport or self.transport)
        clock = Clock(self.clock.now)
        till = open_till(data, clock=clock)
        assert till.sync is not None
        sleeps: list[float] = []
        client = client_for(till.store, till.keys, till.sync, "http://hq.test", transport=transport or self.transport,
                            clock=clock, sleep=sleeps.append,
                            policy=client_kw.pop("policy", RetryPolicy(attempts=3)), **client_kw)
        # Online authorisation goes to this HQ only in the tests that ask for it (`online`):
        # elsewhere the till is treated as offline for redemptions, so the caps are tested.
        till.service.authorize = None
        h = TillHandle(data, till, clock, client, sleeps)
        self.tills.append(h)
        return h

    def close(self) -> None:
        for t in self.tills:
            t.close()
        self.transport.close()
        self.hq.store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hq(clock: Clock) -> Iterator[HqHarness]:
    h = HqHarness("sqlite:///:memory:", clock)
    h.publish()
    yield h
    h.close()


def sale(receipt: str, member: str | None, total: int = 50000, at: dt.datetime = T0) -> Sale:
    """A sale as the POS sends it, parsed."""
    return parse_sale({"receipt": receipt, "member": member, "at": at.isoformat(), "total": total,
                       "lines": [{"sku": "KOPI", "name": "Kopi", "qty": 1, "price": total}]}, now=at)


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgresql"])
def hq_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every HQ storage backend, for the contract suite."""
    if request.param == "sqlite-memory":
        return "sqlite:///:memory:"
    if request.param == "sqlite-file":
        return f"sqlite:///{tmp_path / 'hq.db'}"
    return str(request.getfixturevalue("pg_server").url())


@pytest.fixture
def hq_any(hq_url: str, clock: Clock) -> Iterator[HqHarness]:
    """A published HQ on each backend of `hq_url`."""
    h = HqHarness(hq_url, clock)
    h.publish()
    yield h
    h.close()
