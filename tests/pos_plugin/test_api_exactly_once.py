"""Exactly once at the POS API: a misspelt key is refused everywhere (not silently dropped), a
retry without `at` is a duplicate, another sale under a used receipt number is a 409, and a sale
dated in the future is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from agent.kit import sale

from tillstamp.pos_plugin.client import TillError


def refused(fn) -> TillError:  # type: ignore[no-untyped-def]
    with pytest.raises(TillError) as e:
        fn()
    return e.value


def test_unknown_keys_are_refused_on_every_endpoint(agent) -> None:  # type: ignore[no-untyped-def]
    c = agent.client
    m = c.enroll("0813-2222-3333", "Sari")
    e = refused(lambda: c.record_sale({**sale("R1"), "memebr": "0813-2222-3333"}))
    assert (e.status, e.code) == (422, "invalid_request") and "memebr" in str(e)
    assert c.health()["outbox"]["waiting"] == 1  # the enrolment only: nothing of the sale
    c.record_sale(sale("R1", member=m["member"]))
    for method, path, body in (("POST", "/v1/sales/R1/refund", {"lines": {"KOPI-SUSU": 1}, "line": 1}),
                               ("POST", "/v1/redemptions", {"member": m["member"], "reward": "kopi-gratis",
                                                            "rewrd": 1}),
                               ("POST", "/v1/claims", {"payload": "x", "member": m["member"], "membr": 1})):
        e = refused(lambda method=method, path=path, body=body: c._call(method, path, json=body))
        assert e.status == 422, path


def test_a_retry_without_at_is_a_duplicate_and_a_reused_receipt_is_a_conflict(agent) -> None:  # type: ignore[no-untyped-def]
    c = agent.client
    body = {"receipt": "R7", "total": 25000, "lines": [{"sku": "KOPI", "qty": 1, "price": 25000}]}
    first = c.record_sale(body)
    again = c.record_sale(body)
    assert again["duplicate"] is True and "conflict" not in again and not first["duplicate"]
    e = refused(lambda: c.record_sale({**body, "lines": [{"sku": "TEH", "qty": 1, "price": 25000}]}))
    assert (e.status, e.code) == (409, "receipt_reused")


def test_a_sale_dated_in_the_future_is_refused(agent) -> None:  # type: ignore[no-untyped-def]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    e = refused(lambda: agent.client.record_sale({**sale("R9"), "at": later}))
    assert (e.status, e.code) == (422, "invalid_sale") and "future" in str(e)
