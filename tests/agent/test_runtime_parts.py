"""The runtime's parts: the single writer, the event hub, the last scan, and the receipt."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent.kit import make_till, sale
from tillstamp.agent.receipts import build_receipt, card_text, mission_text
from tillstamp.agent.runtime import EventHub, LastScan, RuntimeStopped, Subscription, Writer
from tillstamp.agent.till import open_till
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.receipt import render_receipt
from tillstamp.loyalty.sale import parse_sale


def test_writer_runs_calls_in_order_on_one_thread_and_hands_back_errors() -> None:
    w = Writer().start()
    seen: list[tuple[int, str]] = []
    futs = [w.submit(lambda i=i: seen.append((i, threading.current_thread().name))) for i in range(50)]
    for f in futs:
        f.result(5)
    assert [i for i, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"tillstamp-writer"}
    with pytest.raises(ZeroDivisionError):
        w.call(lambda: 1 / 0)
    assert w.call(lambda: 42) == 42  # the writer survived
    w.stop()
    with pytest.raises(RuntimeStopped):
        w.submit(lambda: None)


def test_last_scan_expires_and_is_used_once() -> None:
    now = [100.0]
    scan = LastScan(ttl=120, clock=lambda: now[0])
    scan.set("M1")
    now[0] += 119
    assert scan.peek() == "M1"
    scan.take("M1")
    assert scan.peek() is None
    scan.set("M2")
    now[0] += 121
    assert scan.peek() is None


def test_hub_fans_out_keeps_recent_and_ends_streams_on_close() -> None:
    hub = EventHub(keep=3)
    a, b = hub.subscribe(), hub.subscribe(Subscription(size=1))
    for i in range(5):
        hub.publish("sale", receipt=f"R{i}", kind="x")
    assert [a.get(1)["receipt"] for _ in range(5)] == [f"R{i}" for i in range(5)]
    assert b.dropped == 4  # a slow client loses events rather than blocking the till
    assert [e["receipt"] for e in hub.recent] == ["R2", "R3", "R4"]
    hub.close()
    assert a.get(1) is None


def _till(tmp_path: Path):
    return open_till(make_till(tmp_path / "till"))


def test_receipt_of_a_member_sale_and_of_a_guest_sale(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        svc = till.service
        m = svc.enroll("0812-1111-2222", "Rina")
        r1 = svc.record_sale(parse_sale(sale("R1", member=m.id, qty=4), now=svc.now()))
        doc = decode(render_receipt(build_receipt(svc, r1.key, store_name="Kopi Senja", result=r1)))
        assert "Member: Rina" in doc.text and "Selamat! Kamu dapat 5 stempel" in doc.text
        assert doc.qr == []  # the member's card is printed only when asked for
        r2 = svc.record_sale(parse_sale(sale("R2"), now=svc.now()))
        first = decode(render_receipt(build_receipt(svc, r2.key, store_name="Kopi Senja", result=r2)))
        again = decode(render_receipt(build_receipt(svc, r2.key, store_name="Kopi Senja", language="en")))
        assert "Scan di HP kamu: klaim 3 stempel" in first.text
        assert "Scan with your phone: claim 3 stamps" in again.text
        assert first.qr == again.qr == [r2.claim]  # a reprint carries the very same claim QR


def test_a_spend_mission_prints_in_rupiah(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        svc = till.service
        m = svc.enroll("0812-1111-2222", "Rina")
        r = svc.record_sale(parse_sale(sale("R1", member=m.id, qty=4), now=svc.now()))
        text = decode(render_receipt(build_receipt(svc, r.key, store_name="Kopi Senja", result=r),
                                     width=32)).text
        assert "- Belanja Rp 500.000 sebulan" in text  # too long for one line with its progress:
        assert "Rp 100.000 / Rp 500.000".rjust(32) in text  # the name above, the progress below
    assert mission_text("spend_target", 162000, 500000) == "Rp 162.000 / Rp 500.000"
    assert mission_text("visits_in_week", 1, 3) == "1/3"


def test_card_text() -> None:
    assert card_text(5, 10) == "█████░░░░░ 5/10"  # the bar the receipt prints, and the README shows
    assert card_text(12, 10) == "██████████ 10/10"


def test_with_an_hq_url_the_sync_loop_runs_and_health_says_offline(tmp_path: Path) -> None:
    from agent.kit import free_port, running_agent, wait_for

    data = make_till(tmp_path / "till", hq_url=f"http://127.0.0.1:{free_port()}")  # nobody listens
    with running_agent(data) as agent:
        agent.client.record_sale(sale("H1"))
        assert agent.rt.sync is not None
        wait_for(lambda: agent.rt.sync.rounds > 0, timeout=20, what="a sync round")
        out = agent.client.health()["outbox"]
        assert out["sync"] == "offline" and out["waiting"] == out["last_seq"] >= 1
