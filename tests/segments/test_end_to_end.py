"""From the till to a segment: sales pushed by real tills land in the read model at ingest, and
segments, search and the staff API read them there."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sync.conftest import T0, Clock, HqHarness, sale

from tillstamp.hq.crm import Crm
from tillstamp.hq.staff import Principal


@pytest.fixture
def hq(hq_url: str) -> Any:
    h = HqHarness(hq_url, Clock(T0))
    h.publish()
    yield h
    h.close()


def test_sales_pushed_by_tills_are_segmented_and_scoped(hq: HqHarness, tmp_path: Path) -> None:
    a, b = hq.till(tmp_path, "a", "S1"), hq.till(tmp_path, "b", "S2")
    ani = a.service.enroll("081234567890", name="Ani", consent=["whatsapp"])
    budi = b.service.enroll("081298765432", name="Budi")
    for i in range(3):
        a.service.record_sale(sale(f"A{i}", ani.id, 60_000, at=T0 - dt.timedelta(days=10 + i)))
    b.service.record_sale(sale("B1", budi.id, 20_000, at=T0 - dt.timedelta(days=40)))
    a.client.push()
    b.client.push()
    crm = Crm(hq.hq)
    as_of = T0.date() + dt.timedelta(days=1)  # the members were enrolled on T0's day: D must be after it
    got = crm.preview({"all": [{"visits": {"min": 3, "within_days": 30}}, {"consent": "whatsapp"}]}, as_of)
    assert (got.count, [m["member"] for m in got.sample]) == (1, [ani.id])
    assert crm.preview({"last_visit_days": {"min": 30}}, as_of).sample[0]["member"] == budi.id
    assert crm.preview({"spend": {"min": 180_000}}, as_of).count == 1
    assert crm.preview({"store": ["S2"]}, as_of).count == 1
    # Nothing on or after the as-of date counts: enrolled on T0's day, no one is a member on T0.
    assert crm.preview({"all": []}, T0.date()).count == 0
    assert [h["member"] for h in crm.search("0812-3456-7890")] == [ani.id]
    manager = Principal("m", "manager", "S2")
    assert [h["member"] for h in crm.search("Ani", who=manager)] == []
    assert crm.preview({"all": []}, as_of, who=manager).count == 1
