"""Who can reach the POS API: a web page the cashier opens (cross-site forms, DNS rebinding)
is refused with JSON and changes nothing; keyed mode keeps the docs and device URLs private."""

from __future__ import annotations

import json

import pytest
import requests
from agent.kit import make_till, running_agent, sale

from tillstamp.pos_plugin.client import TillClient
from tillstamp.pos_plugin.guard import host_name
from tillstamp.pos_plugin.server import BackgroundServer


def _port(agent) -> int:
    return agent.server.port


def test_a_foreign_host_header_is_refused_before_any_data_is_read(agent):
    agent.client.enroll("0812-3456-7890", "Budi")
    for host in (f"evil.example:{_port(agent)}", "rebind.attacker.test", f"192.168.1.9:{_port(agent)}"):
        r = requests.get(agent.url + "/v1/members", params={"phone": "0812-3456-7890"},
                         headers={"Host": host}, timeout=30)
        assert r.status_code == 421 and r.json()["error"] == "unknown_host"
        assert "Budi" not in r.text
    for host in (f"127.0.0.1:{_port(agent)}", f"localhost:{_port(agent)}", "LOCALHOST."):
        r = requests.get(agent.url + "/v1/members", params={"phone": "0812-3456-7890"},
                         headers={"Host": host}, timeout=30)
        assert r.status_code == 200 and r.json()["name"] == "Budi"


def test_a_cross_site_form_cannot_void_a_sale_or_record_one(agent):
    agent.client.record_sale(sale("R1"))
    refund = agent.url + "/v1/sales/R1/refund"
    # What a hidden <form method=post action=http://127.0.0.1:8765/...> on any site sends.
    r = requests.post(refund, data={"x": "1"}, headers={"Origin": "https://evil.example"}, timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "cross_origin"
    r = requests.post(refund, headers={"Origin": "null"}, timeout=30)  # a sandboxed frame
    assert r.status_code == 403
    r = requests.post(refund, headers={"Sec-Fetch-Site": "cross-site"}, timeout=30)
    assert r.status_code == 403
    # A form posting JSON-looking text/plain (no preflight) is not JSON to us.
    r = requests.post(agent.url + "/v1/sales", data=json.dumps(sale("R2")),
                      headers={"Content-Type": "text/plain"}, timeout=30)
    assert r.status_code == 415 and r.json()["error"] == "json_only"
    r = requests.post(agent.url + "/v1/sales", data=json.dumps(sale("R3")).encode(), timeout=30)
    assert r.status_code == 415  # a body without any Content-Type
    r = requests.post(refund, data="", headers={"Content-Type": "application/x-www-form-urlencoded"},
                      timeout=30)
    assert r.status_code == 415
    state = agent.rt.writer.call(lambda: agent.rt.till.store.last_seq)
    assert state == 1  # only R1's sale: nothing refunded, nothing recorded
    # The panel's own requests (same origin, JSON) and plain API clients still work.
    own = requests.post(agent.url + "/v1/sales", json=sale("R4"),
                        headers={"Origin": agent.url}, timeout=30)
    assert own.status_code == 200 and own.json()["receipt"] == "R4"
    assert agent.client.refund("R1")["refunded"] == 50000


def test_keyed_mode_keeps_docs_and_device_urls_behind_the_key(tmp_path):
    keyed = make_till(tmp_path / "keyed", api_key="s3cret")
    with running_agent(keyed) as a:
        server = BackgroundServer(a.rt, host="0.0.0.0").start()
        try:
            url = f"http://127.0.0.1:{server.port}"
            for path in ("/openapi.json", "/docs", "/redoc"):
                r = requests.get(url + path, timeout=30)
                assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
            assert "/v1/sales" in requests.get(url + "/openapi.json", headers={"X-API-Key": "s3cret"},
                                               timeout=30).json()["paths"]
            bare = requests.get(url + "/health", timeout=30).json()
            assert bare["status"] == "ok"
            assert "receipts.bin" not in json.dumps(bare)
            assert bare["devices"]["printer"]["url"] == "" and bare["print_queue"]["printer"] is None
            full = TillClient(url, api_key="s3cret").health()
            assert full["devices"]["printer"]["url"].startswith("file://")
            # On a wildcard bind any IP literal is fine (it cannot be rebound), names are not.
            ip = requests.get(url + "/health", headers={"Host": f"10.0.0.7:{server.port}"}, timeout=30)
            assert ip.status_code == 200
            name = requests.get(url + "/health", headers={"Host": "evil.example"}, timeout=30)
            assert name.status_code == 421
        finally:
            server.stop()


def test_open_loopback_mode_still_serves_the_docs(agent):
    assert requests.get(agent.url + "/openapi.json", timeout=30).status_code == 200


@pytest.mark.parametrize("header,name", [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"),
                                         ("Till1.Shop.LAN.", "till1.shop.lan"), ("localhost", "localhost")])
def test_host_name_parsing(header, name):
    assert host_name(header) == name
