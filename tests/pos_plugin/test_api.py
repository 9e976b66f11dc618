"""The POS API over real loopback HTTP: sales, refunds, members, rewards, claims, reprints,
errors mapped to 4xx with nothing written, and the API key rule."""

from __future__ import annotations

import threading

import pytest
import requests
from agent.kit import make_till, running_agent, sale, wait_for

from tillstamp.agent.config import ConfigError
from tillstamp.drivers.events import ScanEvent, utc_now
from tillstamp.pos_plugin.client import TillClient, TillError
from tillstamp.pos_plugin.server import BackgroundServer, app_for


def test_sale_result_matches_the_cli_and_repeats_are_duplicates(agent):
    m = agent.client.enroll("0812-3456-7890", "Budi", consent=["whatsapp"])
    first = agent.client.record_sale(sale("R1", member="+6281234567890"))
    assert first == {"receipt": "R1", "member": m["member"], "stamps_awarded": 3, "balance": 3,
                     "duplicate": False}
    again = agent.client.record_sale(sale("R1", member="+6281234567890"))
    assert again["duplicate"] is True and again["stamps_awarded"] == 0
    guest = agent.client.record_sale(sale("R2"))
    assert guest["member"] is None and guest["claim"].startswith("HTTPS://") and guest["claim_stamps"] == 3


def test_at_scan_uses_the_last_scan_once(agent):
    m = agent.client.enroll("0812-1111-2222", "Rina")
    agent.rt.on_scan(ScanEvent(m["card"], "serial:///dev/test", utc_now()))
    wait_for(lambda: agent.rt.last_scan.peek() == m["member"], what="scan")
    r = agent.client.record_sale(sale("S1", member="@scan"))
    assert r["member"] == m["member"]
    with pytest.raises(TillError) as e:
        agent.client.record_sale(sale("S2", member="@scan"))
    assert e.value.status == 404 and e.value.code == "no_scan"


def test_refund_member_lookup_rewards_redeem_and_claim(agent):
    c = agent.client
    m = c.enroll("0813-2222-3333", "Sari", email="sari@example.id", birthday="1995-04-01",
                 consent=["email", "sms"])
    for n in range(3):
        c.record_sale(sale(f"A{n}", member=m["member"], qty=4))
    view = c.find_member("0813 2222 3333")
    bal = view["balance"]  # 3 x 5 stamps, plus the "3 visits a week" mission bonus
    assert view["member"] == m["member"] and bal == 17 and view["card_text"] == "███████░░░ 7/10"
    assert view["consent"] == {"whatsapp": False, "email": True, "sms": True}
    assert any(r["can_redeem"] for r in view["rewards"])
    out = c.redeem(m["member"], "kopi-gratis")
    assert out["stamps"] == -10 and out["balance"] == bal - 10
    ref = c.refund("A0", {"KOPI-SUSU": 2})
    assert ref["stamps"] < 0 and ref["refunded"] == 50000
    guest = c.record_sale(sale("G1"))
    got = c.claim(guest["claim"], m["member"])
    assert got["stamps"] == 3
    with pytest.raises(TillError) as e:
        c.claim(guest["claim"], m["member"])
    assert (e.value.status, e.value.code) == (409, "token_already_claimed")
    assert [r["id"] for r in c.rewards()][:2] == ["kopi-gratis", "pastry-gratis"]


@pytest.mark.parametrize(("call", "status", "code"), [
    (lambda c: c.member("01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404, "unknown_member"),
    (lambda c: c.refund("NOPE"), 404, "unknown_sale"),
    (lambda c: c.redeem("0812-3456-7890", "no-such-reward"), 404, "unknown_reward"),
    (lambda c: c.record_sale({**sale("X1"), "total": 1}), 422, "invalid_sale"),
    (lambda c: c.record_sale({"receipt": "X2", "lines": [], "total": 0}), 422, "invalid_request"),
    (lambda c: c.record_sale({**sale("X3"), "total": "50000"}), 422, "invalid_request"),
    (lambda c: c.enroll("12"), 422, "invalid_phone"),
    (lambda c: c.enroll("0812-3456-7890"), 409, "already_enrolled"),
    (lambda c: c.claim("TS9XYZ", "0812-3456-7890"), 422, "token_malformed"),
    (lambda c: c.record_sale(sale("X4", member="0899-0000-0000")), 404, "unknown_member"),
])
def test_refusals_are_4xx_with_a_reason_and_write_nothing(agent, call, status, code):
    agent.client.enroll("0812-3456-7890", "Budi")
    before = agent.rt.writer.call(lambda: agent.rt.till.store.last_seq)
    with pytest.raises(TillError) as e:
        call(agent.client)
    assert e.value.status == status
    assert e.value.code == code or (code == "token_malformed" and e.value.code.startswith("token_"))
    assert e.value.message
    assert agent.rt.writer.call(lambda: agent.rt.till.store.last_seq) == before


def test_reprint_queues_the_same_receipt_again(agent):
    agent.client.record_sale(sale("P1"))
    out = agent.client.reprint("P1")
    assert out["queued"] and out["job"].startswith("reprint-")
    assert agent.rt.flush_prints(5)  # the sale's own receipt is spooled after its answer
    text = (agent.rt.till.config.data / "receipts.bin").read_bytes()
    assert text.count(b"No P1") == 2


def test_events_stream_scans_sales_and_devices(agent):
    got: list[dict] = []
    ready = threading.Event()

    def listen() -> None:
        with requests.get(agent.url + "/v1/events", stream=True, timeout=10) as r:
            for line in r.iter_lines(decode_unicode=True):
                ready.set()
                if line and line.startswith("data:"):
                    import json

                    got.append(json.loads(line[5:]))
                    if got[-1]["type"] == "sale":
                        return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(5)
    m = agent.client.enroll("0812-7777-8888", "Dewi")
    agent.rt.on_scan(ScanEvent(m["card"], "camera://0", utc_now()))
    wait_for(lambda: agent.rt.last_scan.peek(), what="scan")
    agent.client.record_sale(sale("E1", member="@scan"))
    t.join(5)
    kinds = [e["type"] for e in got]
    assert "enrol" in kinds and "scan" in kinds and kinds[-1] == "sale"
    assert got[-1]["member"] == m["member"] and got[-1]["stamps_awarded"] == 3


def test_health_reports_devices_print_queue_and_outbox(agent):
    agent.client.record_sale(sale("H1"))
    h = agent.client.health()
    assert h["devices"]["camera"]["state"] == "none"
    assert h["devices"]["printer"]["url"].startswith("file://")
    assert h["outbox"] == {"last_seq": 1, "acked": 0, "waiting": 1, "sync": "off"}


def test_openapi_lists_the_endpoints(agent):
    paths = requests.get(agent.url + "/openapi.json", timeout=5).json()["paths"]
    for p in ("/v1/sales", "/v1/sales/{receipt}/refund", "/v1/members", "/v1/members/{member_id}",
              "/v1/rewards", "/v1/redemptions", "/v1/claims", "/v1/print/{receipt}", "/v1/events", "/health"):
        assert p in paths


def test_any_address_but_loopback_needs_a_key(tmp_path):
    data = make_till(tmp_path / "open")
    with running_agent(data) as a, pytest.raises(ConfigError, match="api_key"):
        app_for(a.rt, "0.0.0.0")
    keyed = make_till(tmp_path / "keyed", api_key="s3cret")
    with running_agent(keyed) as a:
        server = BackgroundServer(a.rt, host="0.0.0.0").start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            with pytest.raises(TillError) as e:
                TillClient(url).rewards()
            assert e.value.status == 401
            assert TillClient(url, api_key="s3cret").rewards()
            assert requests.get(url + "/?key=s3cret", timeout=5).status_code == 200
        finally:
            server.stop()
