"""A redemption above the offline caps is authorised by head office against the merged
balance (a bounded wait), then recorded at the till; offline, the caps apply. HQ holds the
stamps of a grant until its redemption arrives, so two tills cannot both spend them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Refused, Service
from tillstamp.agent.store import open_store
from tillstamp.agent.sync_store import attach_sync, client_for, online_authorizer
from tillstamp.loyalty.program import load_program
from tillstamp.sync import errors
from tillstamp.sync.transport import Reply

from .conftest import PROGRAM, HqHarness, TillHandle, sale


def online(t: TillHandle) -> TillHandle:
    assert t.till.sync is not None
    t.service.authorize = online_authorizer(t.till.sync, lambda: t.client)
    return t


class Down:
    """A transport to a head office that cannot be reached."""

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        raise errors.Offline(f"{method} {path}: connection refused")

    def close(self) -> None:
        pass


def silver_with_50(hq: HqHarness, tmp_path: Path) -> tuple[TillHandle, TillHandle, str]:
    a = online(hq.till(tmp_path, "a", "S1"))
    b = online(hq.till(tmp_path, "b", "S2"))
    m = a.service.enroll("081234567890").id
    i = 0
    while a.service.view(m).balance < 50:
        a.service.record_sale(sale(f"A{i}", m, 100000))
        i += 1
    a.client.push()
    b.client.pull()
    assert b.service.view(m).tier.id in ("silver", "gold")
    return a, b, m


def test_a_reward_above_the_offline_cap_is_authorised_by_hq_and_recorded(hq_any: HqHarness, tmp_path: Path) -> None:
    hq = hq_any
    _, b, m = silver_with_50(hq, tmp_path)
    before = hq.hq.store.balances()[m]
    out = b.service.redeem(m, "tumbler")  # 40 stamps, the cap per member is 20
    assert out.stamps == -40 and out.detail["authorized"] == "online"
    assert out.balance == before - 40
    assert hq.hq.store.holds(m, hq.clock()) == 40  # held at HQ until the redemption arrives
    status = b.till.sync.status(b.till.program.offline)  # type: ignore[union-attr]
    assert status["exposure"]["redeemed_blind"] == 0  # authorised online: not blind
    b.client.push()
    assert hq.hq.store.holds(m, hq.clock()) == 0
    assert hq.hq.store.balances()[m] == before - 40
    assert not any(a["kind"] == "overdraft" for a in hq.hq.store.alerts())


def test_hq_holds_the_stamps_so_a_second_till_cannot_spend_them_too(hq: HqHarness, tmp_path: Path) -> None:
    a, b, m = silver_with_50(hq, tmp_path)
    assert 50 <= hq.hq.store.balances()[m] < 80
    b.service.redeem(m, "tumbler")  # 40 held; not pushed yet
    assert a.service.view(m).balance >= 40  # A's view has not seen it...
    with pytest.raises(Refused) as e:
        a.service.redeem(m, "tumbler")  # ...but HQ holds those stamps for B
    assert e.value.reason == "insufficient_balance" and "head office" in str(e.value)
    b.client.push()
    a.client.push()
    assert hq.hq.store.balances()[m] >= 0 and not any(x["kind"] == "overdraft" for x in hq.hq.store.alerts())


def test_stamps_the_till_has_not_pushed_yet_count_once(hq: HqHarness, tmp_path: Path) -> None:
    a, _, m = silver_with_50(hq, tmp_path)
    a.service.redeem(m, "tumbler")
    a.client.push()
    a.client.pull()
    left = a.service.view(m).balance
    i = 0
    while a.service.view(m).balance < 40:  # earned here, not pushed: HQ alone would say no
        a.service.record_sale(sale(f"N{i}", m, 100000))
        i += 1
    assert hq.hq.store.balances()[m] == left < 40
    out = a.service.redeem(m, "tumbler")
    assert out.detail["authorized"] == "online"
    a.client.push()
    assert hq.hq.store.balances()[m] >= 0 and hq.hq.store.holds(m, hq.clock()) == 0


def test_offline_the_caps_apply(hq: HqHarness, tmp_path: Path) -> None:
    _, b, m = silver_with_50(hq, tmp_path)
    assert b.till.sync is not None
    down = client_for(b.till.store, b.till.keys, b.till.sync, "http://hq.test", transport=Down(), clock=b.clock)
    b.service.authorize = online_authorizer(b.till.sync, lambda: down)
    with pytest.raises(Refused) as e:
        b.service.redeem(m, "tumbler")
    assert e.value.reason == "offline_cap_member"
    b.service.redeem(m, "kopi-gratis")  # within the caps: no need to ask
    assert hq.hq.store.holds(m, hq.clock()) == 0


def test_hq_refuses_what_the_merged_balance_does_not_cover(hq: HqHarness, tmp_path: Path) -> None:
    a = online(hq.till(tmp_path, "a", "S1"))
    m = a.service.enroll("081234567890").id
    a.service.record_sale(sale("A1", m, 100000))
    with pytest.raises(Refused) as e:
        a.service.redeem(m, "kopi-gratis")  # 10 > 5: the local view is short, and HQ agrees
    assert e.value.reason == "insufficient_balance"
    assert a.till.store.count_events() == 3 and hq.hq.store.holds(m, hq.clock()) == 0


@pytest.fixture
def silent_hq() -> Iterator[str]:
    """A head office that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


def test_a_till_waits_for_hq_a_bounded_time_then_the_caps_apply(silent_hq: str) -> None:
    store = open_store(":memory:")
    service = Service(store, load_program(PROGRAM), Keys.generate("T1"), store_id="S", terminal_id="T1")
    sync = attach_sync(store, service, service.keys, silent_hq)
    assert sync is not None and service.authorize is not None
    assert service.authorize("M1", "tumbler", 40) is None  # no answer within the deadline: offline
