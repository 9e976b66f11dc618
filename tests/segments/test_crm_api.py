"""The staff API: bearer tokens only (a till's signature opens nothing), managers see their own
store, bad definitions are refused with the key's path and change nothing, exports are audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sync.conftest import T0, Clock, HqHarness

from segments import crmdata
from tillstamp.hq import crm_store
from tillstamp.hq.crm import Crm
from tillstamp.hq.segments import Facts, LineFacts, MemberFacts
from tillstamp.sync import protocol as p

D = crmdata.BASE_DAY


@pytest.fixture
def hq(hq_url: str) -> Any:
    h = HqHarness(hq_url, Clock(T0))
    h.publish()
    crmdata.clear(h.hq.store)
    with h.hq.store._tx() as c:  # a PostgreSQL database is shared by the tests of a session
        for t in ("staff_users", "audit_log"):
            h.hq.store._x(c, f"DELETE FROM {t}")
    crmdata.load(h.hq.store, Facts(
        members=[MemberFacts("M1", "S1", D - 300, "1990-03-05", frozenset({"whatsapp"}), 7, "gold"),
                 MemberFacts("M2", "S2", D - 300),
                 MemberFacts("M3", "S2", D - 300)],
        lines=[LineFacts("R1", "M1", "S1", D - 5, "A", "X", 1, 25_000),
               LineFacts("R2", "M3", "S1", D - 4, "A", "X", 1, 10_000),   # M3 is from S2 but buys at S1 too
               LineFacts("R3", "M3", "S2", D - 3, "C", "Y", 2, 40_000)],
    ))
    yield h
    h.close()


def call(h: HqHarness, method: str, path: str, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    reply = h.transport.request(method, path, body=data, headers=hdrs)
    try:
        return reply.status, reply.json()
    except ValueError:
        return reply.status, reply.body.decode()


def user(h: HqHarness, name: str, role: str) -> str:
    return Crm(h.hq).add_user(name, role)[1]


def test_no_token_a_wrong_token_or_a_till_signature_opens_nothing(hq: HqHarness, tmp_path: Path) -> None:
    assert call(hq, "GET", "/v1/crm/members?q=M1")[0] == 401
    reply = hq.transport.request("GET", "/v1/crm/members?q=M1", headers={"Authorization": "Bearer tsk_not-a-token"})
    assert reply.status == 401 and reply.json()["error"] == "unauthorized"
    assert reply.header("WWW-Authenticate") == "Bearer"  # RFC 6750
    till = hq.till(tmp_path, "t", "S1")
    path = "/v1/crm/members/M1"
    signed = p.sign_request(till.till.keys.terminal, till.till.config.terminal, "GET", path, b"",
                            int(T0.timestamp() * 1000))
    status, body = call(hq, "GET", path, headers=signed)
    assert status == 401 and "bearer" in body["message"]
    # The same signature is still good for what tills may do: it is the route that refuses it.
    assert hq.transport.request("GET", "/v1/pull?cursor=0", headers=p.sign_request(
        till.till.keys.terminal, till.till.config.terminal, "GET", "/v1/pull?cursor=0", b"",
        int(T0.timestamp() * 1000))).status == 200


def test_a_manager_sees_only_their_stores_members_and_sales(hq: HqHarness) -> None:
    owner, s1 = user(hq, "olivia", "owner"), user(hq, "budi", "manager:S1")
    assert call(hq, "GET", "/v1/crm/members/M2", owner)[0] == 200
    status, body = call(hq, "GET", "/v1/crm/members/M2", s1)
    assert status == 404 and "M2" in body["message"] and "phone" not in body
    status, body = call(hq, "GET", "/v1/crm/members/M3", s1)  # bought at S1: visible, with S1's sales only
    assert status == 200 and [s["sale"] for s in body["sales"]] == ["R2"]
    assert [s["sale"] for s in call(hq, "GET", "/v1/crm/members/M3", owner)[1]["sales"]] == ["R3", "R2"]
    assert [m["member"] for m in call(hq, "GET", "/v1/crm/members?q=Member", s1)[1]] == ["M1", "M3"]
    assert len(call(hq, "GET", "/v1/crm/members?q=Member", owner)[1]) == 3
    status, body = call(hq, "POST", "/v1/crm/segments/preview", s1, {"definition": {"all": []},
                                                                      "as_of": crmdata.BASE.isoformat()})
    assert status == 200 and body["count"] == 2
    assert call(hq, "GET", "/v1/crm/overview?as_of=2026-03-01", s1)[1]["sales_30d"] == 2
    assert call(hq, "GET", "/v1/crm/overview?as_of=2026-03-01", owner)[1]["sales_30d"] == 3


def test_search_by_any_phone_form_name_id_and_external_id(hq: HqHarness) -> None:
    token = user(hq, "mia", "marketer")
    phone = crmdata.member_row(MemberFacts("M1"), 0)[1]  # +628120000000
    local = "0" + phone[3:6] + "-" + phone[6:10] + "-" + phone[10:]
    for q in (phone, local, "M1", "X-M1", "member m1"):
        status, hits = call(hq, "GET", f"/v1/crm/members?q={q}", token)
        assert status == 200 and hits[0]["member"] == "M1", q
        assert set(hits[0]) >= {"member", "external_id", "name", "phone"}


def test_bad_definitions_are_refused_with_the_path_and_nothing_is_written(hq: HqHarness) -> None:
    token = user(hq, "mia", "marketer")
    cases = {
        '{"all": [{"visits": {"min": 1}}, {"visits": {"min": "5"}}]}': "all[1].visits.min: expected a whole number",
        '{"any": [{"bought": {"sku": "A", "category": "X"}}]}': "any[0].bought: give exactly one of sku or category",
        '{"not": {"rfm": ["champs"]}}': "not.rfm[0]: unknown RFM cell",
        '{"all": [{"colour": "red"}]}': "all[0].colour: unknown condition",
        '{"visits": {"min": 1}, "spend": {"min": 1}}': "expected exactly one condition",
    }
    for text, message in cases.items():
        for path, body in (("/v1/crm/segments/preview", {"definition": json.loads(text)}),
                           ("/v1/crm/segments/bad", {"definition": json.loads(text)})):
            status, got = call(hq, "POST" if path.endswith("preview") else "PUT", path, token, body)
            assert status == 422 and got["error"] == "invalid_segment" and message in got["message"], (text, got)
    store = hq.hq.store
    assert crm_store.list_segments(store) == [] and crm_store.sizes(store, "bad") == []


def test_segments_crud_roles_sizes_and_audited_export(hq: HqHarness) -> None:
    mia, s1 = user(hq, "mia", "marketer"), user(hq, "budi", "manager:S1")
    definition = {"all": [{"bought": {"category": "X"}}, {"visits": {"min": 1, "within_days": 30}}]}
    assert call(hq, "PUT", "/v1/crm/segments/x-buyers", s1, {"definition": definition})[0] == 403
    status, shown = call(hq, "PUT", "/v1/crm/segments/x-buyers", mia, {"definition": definition,
                                                                       "description": "pembeli X"})
    assert status == 200 and shown["definition"] == definition and len(shown["sizes"]) == 1
    assert call(hq, "PUT", "/v1/crm/segments/lapsed-30", mia, {"definition": definition})[0] == 409
    names = [s["name"] for s in call(hq, "GET", "/v1/crm/segments", s1)[1]]
    assert names[0] == "x-buyers" and "rfm-champions" in names and "lapsed-30" in names
    status, got = call(hq, "GET", "/v1/crm/segments/x-buyers/preview?as_of=2026-03-01", mia)
    assert status == 200 and got["count"] == 2
    status, csv_text = call(hq, "GET", "/v1/crm/segments/x-buyers/export?as_of=2026-03-01", s1)
    assert status == 200 and csv_text.splitlines()[0].startswith("member,external_id,name,phone")
    assert [ln.split(",")[0] for ln in csv_text.splitlines()[1:]] == ["M1", "M3"]
    log = crm_store.audit_log(hq.hq.store)
    assert log[0]["action"] == "segment.export" and log[0]["actor"] == "budi"
    assert log[0]["detail"] == {"as_of": "2026-03-01", "rows": 2, "store": "S1"}
    sizes = call(hq, "GET", "/v1/crm/segments/x-buyers", mia)[1]["sizes"]
    assert {"day": "2026-03-01", "size": 2} in sizes
    assert call(hq, "DELETE", "/v1/crm/segments/x-buyers", s1)[0] == 403
    assert call(hq, "DELETE", "/v1/crm/segments/x-buyers", mia)[0] == 200
    assert call(hq, "GET", "/v1/crm/segments/x-buyers", mia)[0] == 404
