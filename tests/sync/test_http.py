"""Over real loopback HTTP: uvicorn in a thread, a fault proxy in between."""

from __future__ import annotations

from pathlib import Path

import pytest

from tillstamp.agent.sync_store import client_for
from tillstamp.sync import errors
from tillstamp.sync.client import RetryPolicy
from tillstamp.sync.transport import RequestsTransport

from .checker import History, check
from .conftest import HqHarness, sale
from .live import FaultProxy, Faults, serve


def test_push_and_pull_over_loopback_http(hq: HqHarness, tmp_path: Path) -> None:
    with serve(hq.app) as url:
        t = RequestsTransport(url, timeout=5)
        a = hq.till(tmp_path, "a", "S1", transport=t)
        m = a.service.enroll("081234567890")
        a.service.record_sale(sale("R1", m.id))
        assert a.client.push().acked == a.till.store.last_seq
        assert a.client.pull().changes > 0
        t.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_event_arrives_once_through_a_faulty_network(hq: HqHarness, tmp_path: Path, seed: int) -> None:
    faults = Faults(seed=seed, latency=0.02, reset=0.15, hang=0.05, cut=0.15, slice=0.2)
    with serve(hq.app) as url:
        a = hq.till(tmp_path, "a", "S1", transport=RequestsTransport(url, timeout=5))
        members = [a.service.enroll(f"0812345678{i:02d}").id for i in range(5)]
        for i in range(60):
            a.service.record_sale(sale(f"R{i}", members[i % 5], 50000 + i))
        with FaultProxy(int(url.rsplit(":", 1)[1]), faults) as proxy:
            transport = RequestsTransport(proxy.url, timeout=0.5)
            client = client_for(a.till.store, a.till.keys, a.till.sync, proxy.url, transport=transport,  # type: ignore[arg-type]
                                clock=a.clock, sleep=lambda s: None, max_events=9,
                                policy=RetryPolicy(attempts=3, timeout_s=0.5))
            for _ in range(60):  # bounded: every round either advances or meets a fault
                try:
                    if client.push().waiting == 0:
                        break
                except errors.Retryable:
                    continue
            log = list(proxy.log)
        assert a.till.sync.acked() == a.till.store.last_seq, f"seed={seed} faults={log}"  # type: ignore[union-attr]
        hq_events = [e for _, e in hq.hq.store.events(0, 10000)]
        problems = check(History({"a": a.till.store.events()}, hq_events, hq.hq.store.balances(), 0))
        assert problems == [], f"seed={seed} faults={log}: {problems}"
        assert {"reset", "cut", "slice"} & set(log), f"seed={seed}: no fault was exercised"


def test_a_hanging_hq_times_out_within_the_hard_limit(hq: HqHarness) -> None:
    import time

    with serve(hq.app) as url, FaultProxy(int(url.rsplit(":", 1)[1]), Faults(seed=9, hang=1.0)) as proxy:
        t = RequestsTransport(proxy.url, timeout=0.3)
        start = time.monotonic()
        with pytest.raises(errors.TimedOut):
            t.request("GET", "/v1/time")
        assert time.monotonic() - start < 2


def test_nothing_listening_is_offline() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(errors.Offline):
        RequestsTransport(f"http://127.0.0.1:{port}", timeout=1).request("GET", "/v1/time")
