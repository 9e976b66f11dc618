"""Devices failing during a stream of sales: an unplugged printer or scanner loses no sale
and no receipt; scans travel from a real pty to the event hub."""

from __future__ import annotations

import time
from pathlib import Path

from agent.kit import LoopbackPrinter, PtyScanner, make_till, running_agent, sale, wait_for
from tillstamp.agent.runtime import Subscription


def test_printer_unplugged_mid_stream_loses_no_sale_and_no_receipt(tmp_path: Path) -> None:
    printer = LoopbackPrinter()
    data = make_till(tmp_path / "till", printer=printer.url)
    with running_agent(data) as agent:
        slowest = 0.0
        for i in range(30):
            if i == 10:
                printer.unplug()
            if i == 20:
                assert agent.client.health()["print_queue"]["pending"] > 0
                printer.plug()
            t = time.perf_counter()
            r = agent.client.record_sale(sale(f"P{i:02d}"))
            slowest = max(slowest, time.perf_counter() - t)
            assert not r["duplicate"]
        assert slowest < 1.0, "a sale waited for the printer"
        want = sorted(f"P{i:02d}" for i in range(30))
        wait_for(lambda: printer.receipts() == want, timeout=30, what="every receipt printed")
        wait_for(lambda: agent.rt.print_queue.pending() == [], what="spool empty")
    printer.unplug()


def test_receipts_spooled_while_printer_is_away_print_after_a_restart(tmp_path: Path) -> None:
    printer = LoopbackPrinter()
    printer.unplug()
    data = make_till(tmp_path / "till", printer=printer.url)
    with running_agent(data, print_flush_timeout=0.2) as agent:
        for i in range(3):
            agent.client.record_sale(sale(f"Q{i}"))
        wait_for(lambda: agent.rt.devices["printer"].state == "retrying", what="printer retrying")
    printer.plug()
    with running_agent(data):
        wait_for(lambda: printer.receipts() == ["Q0", "Q1", "Q2"], timeout=20, what="spooled receipts")
    printer.unplug()


def test_scanner_unplugged_mid_stream_loses_no_sale(tmp_path: Path) -> None:
    scanner = PtyScanner()
    data = make_till(tmp_path / "till", scanner=f"serial://{scanner.path}")
    with running_agent(data) as agent:
        wait_for(lambda: agent.rt.devices["scanner"].state == "open", what="scanner open")
        m = agent.client.enroll("0812-1111-2222", "Rina")
        sub = agent.rt.hub.subscribe(Subscription())
        for i in range(20):
            if i == 5:
                scanner.scan(m["card"])
                wait_for(lambda: agent.rt.last_scan.peek(), what="scan")
                assert agent.client.record_sale(sale(f"S{i:02d}", member="@scan"))["member"] == m["member"]
                continue
            if i == 10:
                scanner.unplug()
            assert not agent.client.record_sale(sale(f"S{i:02d}"))["duplicate"]
        wait_for(lambda: agent.rt.devices["scanner"].state in ("lost", "retrying", "opening"),
                 what="scanner reported lost")
        events = []
        while not sub.q.empty():
            events.append(sub.q.get())
        assert any(e["type"] == "device" and e["device"] == "scanner" and e["state"] in ("lost", "retrying")
                   for e in events)
        sales = agent.rt.writer.call(lambda: agent.rt.till.store.recent_sales(50))
        assert sorted(s.receipt for s in sales) == [f"S{i:02d}" for i in range(20)]


def test_a_scan_reaches_the_event_hub_quickly(tmp_path: Path) -> None:
    scanner = PtyScanner()
    data = make_till(tmp_path / "till", scanner=f"serial://{scanner.path}")
    with running_agent(data) as agent:
        wait_for(lambda: agent.rt.devices["scanner"].state == "open", what="scanner open")
        m = agent.client.enroll("0812-1111-2222", "Rina")
        sub = agent.rt.hub.subscribe(Subscription())
        t0 = scanner.scan(m["card"])
        while True:
            e = sub.get(timeout=5)
            if e and e["type"] == "scan":
                break
        assert e["member"] == m["member"]
        assert time.perf_counter() - t0 < 1.0
    scanner.unplug()
