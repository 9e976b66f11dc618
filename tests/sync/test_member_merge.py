"""One phone enrolled at two tills while both were offline: head office merges the two ids
(`member.merged`, the later enrolment becomes an alias of the earlier), joins balances and
history, tells the tills on their next pull, and raises it."""

from __future__ import annotations

from pathlib import Path

from tillstamp.loyalty import events as ev

from .conftest import HqHarness, sale


def test_one_phone_enrolled_at_two_offline_tills_becomes_one_member(hq_any: HqHarness, tmp_path: Path) -> None:
    hq = hq_any
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    first = a.service.enroll("081234567890", name="Ani")
    b.clock.advance(minutes=5)
    second = b.service.enroll("0812-3456-7890", name="Ani K")  # the same number, later, elsewhere
    assert first.id != second.id
    a.service.record_sale(sale("A1", first.id, 100000))
    b.service.record_sale(sale("B1", second.id, 100000, at=b.clock()))
    for t in (a, b):
        t.client.push()
    store = hq.hq.store
    [merged] = [e for e in store.member_events(second.id) if e.kind == ev.MERGED]
    assert merged.body["into"] == first.id and merged.member == second.id  # the earlier enrolment survives
    balances = store.balances()
    both = sum(e.stamps for t in (a, b) for e in t.till.store.events() if e.member in (first.id, second.id))
    assert (balances[first.id], balances[second.id]) == (both, 0)
    [alert] = [x for x in store.alerts() if x["kind"] == "member_merged"]
    assert alert["detail"] == {"alias": second.id, "into": first.id}

    # B has not heard yet and keeps using the alias: its stamps follow to the survivor.
    b.clock.advance(minutes=10)
    late = b.service.record_sale(sale("B2", second.id, 100000, at=b.clock()))
    assert late.member == second.id
    b.client.push()
    both += late.stamps_awarded
    assert (store.balances()[first.id], store.balances()[second.id]) == (both, 0)

    for t in (a, b):
        t.client.pull()
        row = t.service.identify("081234567890")
        assert row.id == first.id, t.till.config.terminal  # the phone now means the survivor
        assert t.service.identify(second.id).id == first.id
        view = t.service.view(first.id)
        assert view.balance == both and view.visits == 3  # balances and history joined
