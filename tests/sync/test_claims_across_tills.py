"""Receipt claims across tills, settled at the merge: a voided guest sale's claim is revoked
everywhere (and taken back, with an alert, when claimed before a till knew), and one claim QR
claimed for two members at two offline tills keeps one and compensates the other, visibly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tillstamp.agent.service import Refused
from tillstamp.loyalty import events as ev

from .conftest import HqHarness, TillHandle, sale


def three_tills(hq: HqHarness, tmp_path: Path) -> tuple[TillHandle, TillHandle, TillHandle]:
    a, b, f = (hq.till(tmp_path, n, s) for n, s in (("a", "S1"), ("b", "S2"), ("f", "S3")))
    for t in (a, b, f):
        t.client.push()
    for t in (a, b, f):
        t.client.pull()  # every till trusts every other till's claim signatures
    return a, b, f


def agree(hq: HqHarness, member: str, *tills: TillHandle) -> int:
    for t in tills:
        t.client.push()
    for t in tills:
        t.client.pull()
    at_hq = hq.hq.store.balances().get(member, 0)
    assert at_hq == sum(e.stamps for e in hq.hq.store.member_events(member))
    for t in tills:
        assert t.service.view(member).balance == at_hq, t.till.config.terminal
    return at_hq


@pytest.mark.parametrize("void_first", [True, False])
def test_a_claim_of_a_voided_receipt_is_taken_back_at_the_merge(hq: HqHarness, tmp_path: Path,
                                                               void_first: bool) -> None:
    _, b, f = three_tills(hq, tmp_path)
    m = f.service.enroll("081234567890").id
    f.service.record_sale(sale("F1", m, 100000))  # 5 of the member's own
    guest = b.service.record_sale(sale("B1", None, 100000))
    assert guest.claim and guest.claim_stamps == 5
    b.service.refund("B1")  # voided at B
    if void_first:
        b.client.push()  # HQ knows; F does not yet (offline)
    out = f.service.claim(guest.claim, m)  # F, offline, credits it
    assert out.stamps == 5
    assert agree(hq, m, b, f) == 5  # the claim was taken back
    [alert] = [x for x in hq.hq.store.alerts() if x["kind"] == "claim_of_refunded"]
    assert alert["member"] == m and alert["detail"]["taken"] == 5
    adjusted = [e for e in hq.hq.store.member_events(m) if e.kind == ev.ADJUSTED]
    assert [e.stamps for e in adjusted] == [-5]


def test_a_till_that_knows_of_the_void_refuses_the_claim(hq: HqHarness, tmp_path: Path) -> None:
    _, b, f = three_tills(hq, tmp_path)
    m = f.service.enroll("081234567890").id
    guest = b.service.record_sale(sale("B1", None, 100000))
    b.service.refund("B1")
    b.client.push()
    f.client.pull()
    with pytest.raises(Refused) as e:
        f.service.claim(guest.claim or "", m)
    assert e.value.reason == "refunded"
    assert not any(ev_.kind == ev.CLAIMED for ev_ in f.till.store.events())


def test_one_claim_for_two_members_at_two_offline_tills_keeps_one_and_compensates_the_other(
        hq: HqHarness, tmp_path: Path) -> None:
    a, b, f = three_tills(hq, tmp_path)
    m1 = a.service.enroll("081234567890").id
    m2 = b.service.enroll("081298765432").id
    guest = f.service.record_sale(sale("F1", None, 100000))
    f.client.push()
    assert a.service.claim(guest.claim or "", m1).stamps == 5
    assert b.service.claim(guest.claim or "", m2).stamps == 5  # both offline: both cashiers said yes
    assert agree(hq, m1, a, b) == 5
    assert agree(hq, m2, a, b) == 5  # kept by compensation, not lost
    [alert] = [x for x in hq.hq.store.alerts() if x["kind"] == "double_claim"]
    assert alert["member"] == m2 and alert["detail"]["kept_for"] == m1 and alert["detail"]["compensated"] == 5
    a.client.push()
    b.client.push()  # a resend changes nothing
    assert [x["kind"] for x in hq.hq.store.alerts()].count("double_claim") == 1
