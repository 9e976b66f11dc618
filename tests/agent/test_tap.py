"""The print tap inside the agent: `[tap] listen` starts it with the runtime; a receipt the POS
prints through it is recorded through the writer (seen by the POS API and the ledger), the
member scanned just before gets its stamps on the printed block, and /health reports it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.kit import LoopbackPrinter, make_till, pos_print, running_agent, struk, wait_for
from tillstamp.agent.config import CONFIG_NAME, load_config, render_config
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.events import ScanEvent, utc_now
from tillstamp.pos_plugin.client import TillError

TILLSTAMP = str(Path(sys.executable).parent / "tillstamp")


def _with_tap(data: Path, **tap: object) -> Path:
    cfg = load_config(data)
    (data / CONFIG_NAME).write_text(render_config(type(cfg)(**{
        **{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "extra": {**cfg.extra, "tap": tap}})),
        encoding="utf-8")
    return data


def test_a_receipt_printed_through_the_tap_is_recorded_and_the_scanned_member_gets_stamps(tmp_path):
    printer = LoopbackPrinter()
    data = _with_tap(make_till(tmp_path / "till"), listen="tcp://127.0.0.1:0", printer=printer.url,
                     member_window_s=30, cut_idle_s=0.1, idle_s=1)
    with running_agent(data) as agent:
        rt, client = agent.rt, agent.client
        assert rt.tap is not None and rt.last_scan.ttl == 30
        health = client.health()
        assert health["devices"]["tap"]["state"] == "open"
        assert health["tap"]["listen"] == rt.tap.url and health["tap"]["jobs"] == 0

        m = client.enroll("0812-1111-2222", "Rina")
        rt.on_scan(ScanEvent(m["card"], "camera://0", utc_now()))
        wait_for(lambda: rt.last_scan.peek() == m["member"], what="scan")
        pos_print(rt.tap.address, struk("INV-0001", (("Es Kopi Susu Aren", 2, 25000),)))
        wait_for(lambda: rt.tap_jobs["jobs"] >= 1, what="the tap's job report")

        view = client.member(m["member"])
        assert view["balance"] == 3 and view["visits"] == 1  # 50.000 earns 3 stamps
        assert rt.last_scan.peek() is None  # used once: the next customer starts clean
        sale = rt.writer.call(lambda: rt.till.store.sales_by_receipt("INV-0001"))
        assert [(s.member, s.total) for s in sale] == [(m["member"], 50000)]
        text = "\n".join(decode(bytes(printer.received)).text)
        assert "INV-0001" in text and "Selamat! Kamu dapat 3 stempel" in text

        # No scan this time: a guest receipt gets the claim QR; a reprint records nothing new.
        pos_print(rt.tap.address, struk("INV-0002"))
        pos_print(rt.tap.address, struk("INV-0002"))
        wait_for(lambda: rt.tap_jobs["jobs"] >= 3, what="two more job reports")
        # The same receipt number told again through the API with other content (no time, no
        # names) is another sale under a used number: refused, nothing counted twice.
        with pytest.raises(TillError) as refused:
            client.record_sale({"receipt": "INV-0002", "total": 50000, "lines": [
                {"sku": "ES KOPI SUSU AREN", "qty": 2, "price": 25000}]})
        assert (refused.value.status, refused.value.code) == (409, "receipt_reused")
        doc = decode(bytes(printer.received))
        assert len(doc.qr) == 2 and doc.qr[0] == doc.qr[1]  # the reprint shows the same claim QR
        health = client.health()
        assert health["tap"]["jobs"] == 3 and health["tap"]["recorded"] == 3
        assert health["tap"]["errors"] == 0
        assert any(e["type"] == "sale" and e.get("source") == "tap" for e in rt.hub.recent)
    printer.unplug()


def test_without_listen_there_is_no_tap_and_init_writes_the_section_commented(tmp_path):
    data = make_till(tmp_path / "till")
    text = (data / CONFIG_NAME).read_text()
    assert '[tap]\n' in text and 'listen = ""' in text and "# member_window_s = 120" in text
    with running_agent(data) as agent:
        assert agent.rt.tap is None and agent.client.health()["tap"] is None


def test_a_port_in_use_is_reported_and_sales_go_on(tmp_path):
    printer = LoopbackPrinter()
    data = _with_tap(make_till(tmp_path / "till"), listen=f"tcp://127.0.0.1:{printer.port}",
                     printer=printer.url)
    with running_agent(data) as agent:
        assert agent.client.health()["devices"]["tap"]["state"] == "failed"
        assert not agent.client.record_sale({"receipt": "R1", "total": 25000, "lines": [
            {"sku": "KOPI", "qty": 1, "price": 25000}]})["duplicate"]
    printer.unplug()


def test_agent_run_refuses_a_wrong_tap_section(tmp_path):
    data = _with_tap(make_till(tmp_path / "till"), listen="tcp://127.0.0.1:0", offline="maybe")
    r = subprocess.run([TILLSTAMP, "--data", str(data), "agent", "run", "--listen", "127.0.0.1:0"],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "[tap] offline" in r.stderr
