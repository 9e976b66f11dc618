"""Head office's segment tags at the till, and offers given offline (issue 16).

Real parts: HQ on SQLite (and PostgreSQL for the feed), tills with their own SQLite ledgers,
the in-process transport through the HQ app. Clocks are set, never waited for."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tillstamp.agent.receipts import build_receipt
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.receipt import render_receipt
from tillstamp.hq import crm_store, store_tags
from tillstamp.hq.crm import Crm
from tillstamp.hq.tags import refresh_tags
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.offers import applicable

from .conftest import Clock, HqHarness, TillHandle, program_source, sale

OFFER = {"id": "balik-lagi", "name": "Kembali lagi", "segment": "lapsed-30", "stamps": 3,
         "per": "month"}


def offer_program(**earn: Any) -> dict[str, Any]:
    src = program_source()
    src["earn"]["offer"] = [OFFER]
    src["earn"].update(earn)
    return src


def advance(hq: HqHarness, *tills: TillHandle, days: int) -> None:
    hq.clock.advance(days=days)
    for t in tills:
        t.clock.advance(days=days)


def offers_of(events: list[ev.Event]) -> list[ev.Event]:
    return [e for e in events if e.kind == ev.EARNED and e.body.get("offer")]


@pytest.fixture
def hq_offers(clock: Clock) -> Iterator[HqHarness]:
    h = HqHarness("sqlite:///:memory:", clock)
    h.hq.publish_program(offer_program())
    yield h
    h.close()


def lapsed_member(hq: HqHarness, a: TillHandle, *others: TillHandle) -> str:
    """A member who bought once at A, then stayed away 35 days; HQ refreshed tags; all pulled."""
    m = a.service.enroll("081234567890", name="Ani")
    a.service.record_sale(sale("A0", m.id, 50000))
    a.client.push()
    advance(hq, a, *others, days=35)
    refresh_tags(hq.hq)
    for t in (a, *others):
        t.client.pull()
    return m.id


def test_two_tills_give_the_offer_offline_and_after_sync_there_is_one_award(hq_offers: HqHarness,
                                                                             tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    m = lapsed_member(hq, a, b)
    for t in (a, b):
        tagging = t.till.sync.tagging(m)  # type: ignore[union-attr]
        assert tagging is not None and "lapsed-30" in tagging.tags
        assert tagging.hints["last_visit"] == "2026-03-02"

    # Both tills offline: each gives the offer on its own sale.
    at = hq.clock.now
    ra = a.service.record_sale(sale("A1", m, 50000, at=at))
    rb = b.service.record_sale(sale("B1", m, 50000, at=at))
    assert ra.stamps_awarded == rb.stamps_awarded == 3 + 3  # visit 1 + spend 2, and the offer's 3
    [oa] = offers_of(a.service.member_events(m))
    [ob] = offers_of(b.service.member_events(m))
    assert oa.id == ob.id and oa.terminal != ob.terminal
    # A second sale this month at the same till: no second offer.
    assert a.service.record_sale(sale("A2", m, 50000, at=at)).stamps_awarded == 3

    for t in (a, b):
        t.client.push()
    for t in (a, b):
        t.client.pull()
    at_hq = hq.hq.store.member_events(m)
    assert len(offers_of(at_hq)) == 1
    total = sum(e.stamps for e in at_hq)
    assert total == 3 + 3 + 3 + 3 + 3  # A0, A1, A2, B1, and one offer
    assert hq.hq.store.balances()[m] == total
    for t in (a, b):
        assert len(offers_of(t.service.member_events(m))) == 1
        assert t.service.view(m).balance == total
    # A month later the member is lapsed again (31 days): a new period, a new award.
    advance(hq, a, b, days=31)
    refresh_tags(hq.hq)
    a.client.pull()
    assert a.service.record_sale(sale("A3", m, 50000, at=hq.clock.now)).stamps_awarded == 6
    assert len({e.id for e in offers_of(a.service.member_events(m))}) == 2
    # A member who just came back is no longer lapsed once HQ refreshes: no tag, no offer.
    a.client.push()
    advance(hq, a, b, days=1)
    refresh_tags(hq.hq)
    b.client.pull()
    assert "lapsed-30" not in b.till.sync.tagging(m).tags  # type: ignore[union-attr]


def test_a_tag_older_than_max_tag_age_days_is_ignored(hq_offers: HqHarness, tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    m = lapsed_member(hq, a)
    program = a.service.program
    assert program.max_tag_age_days == 7
    tagging = a.till.sync.tagging(m)  # type: ignore[union-attr]
    assert applicable(program, m, tagging, [], a.clock.now)
    # HQ's tags are now 8 days old at the till (no refresh, or the till did not pull): ignored.
    advance(hq, a, days=8)
    assert a.service.record_sale(sale("A1", m, 50000, at=a.clock.now)).stamps_awarded == 3
    assert not offers_of(a.service.member_events(m))
    # HQ refreshes: the member's tags did not change, so their feed entry does not move, but the
    # refresh's as-of reaches the till at the end of the pull and makes the tag fresh again.
    feed_before = hq.hq.store.feed_entry(f"member:{m}")
    out = refresh_tags(hq.hq)
    assert out.changed == 0 and hq.hq.store.feed_entry(f"member:{m}") == feed_before
    a.client.pull()
    assert a.service.record_sale(sale("A2", m, 50000, at=a.clock.now)).stamps_awarded == 6


def test_the_program_refuses_absurd_offers() -> None:
    from tillstamp.loyalty.program import ProgramError, parse_program

    for bad, message in [
        ({**OFFER, "stamps": 10**9}, "earn.offer[0].stamps: must be at most 1,000"),
        ({"id": "x", "segment": "lapsed-30", "multiplier": 1e308}, "earn.offer[0].multiplier: must be at most 10"),
        ({"id": "x", "segment": "lapsed-30", "multiplier": 0.5}, "earn.offer[0].multiplier: must be more than 1"),
        ({"id": "x", "segment": "lapsed-30", "multiplier": 2, "stamps": 2}, "give exactly one of multiplier"),
        ({"id": "x", "segment": "Lapsed 30", "stamps": 2}, "earn.offer[0].segment: use 1-64 of a-z"),
        ({"id": "x", "segment": "lapsed-30", "stamps": 2, "per": "hour"}, "earn.offer[0].per: 'hour' is not one"),
    ]:
        src = program_source()
        src["earn"]["offer"] = [bad]
        with pytest.raises(ProgramError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_program(src)
    for age, message in [(0, "must be at least 1"), (10_000, "must be at most 90")]:
        with pytest.raises(ProgramError, match=f"earn.max_tag_age_days: {message}"):
            parse_program(offer_program(max_tag_age_days=age))
    src = program_source()
    src["earn"]["bonus"].append({"name": "x", "segment": "lapsed-30", "multiplier": 2})
    with pytest.raises(ProgramError, match=r"earn.bonus\[2\].segment: an offer for a segment goes in"):
        parse_program(src)


@pytest.fixture
def hq_any(hq_url: str, clock: Clock) -> Iterator[HqHarness]:
    h = HqHarness(hq_url, clock)
    h.hq.publish_program(offer_program())
    yield h
    h.close()


def test_a_segment_change_at_hq_reaches_the_till_on_the_next_pull(hq_any: HqHarness, tmp_path: Path) -> None:
    hq = hq_any
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890", name="Ani", birthday="1990-03-05")
    for i in range(2):
        a.service.record_sale(sale(f"A{i}", m.id, 50000))
    a.client.push()
    advance(hq, a, days=1)
    crm = Crm(hq.hq)
    crm.save({"name": "pelanggan-setia", "visits": {"min": 2}})
    first = refresh_tags(hq.hq)
    assert first.changed == 1 and "pelanggan-setia" in first.segments
    a.client.pull()
    tagging = a.till.sync.tagging(m.id)  # type: ignore[union-attr]
    assert tagging is not None and "pelanggan-setia" in tagging.tags
    assert tagging.as_of == dt.datetime(2026, 3, 2, 17, 0, tzinfo=dt.UTC)  # 3 March 00:00 Jakarta
    assert tagging.hints["birthday_week"] is True  # 5 March is within 3..9 March
    assert tagging.hints["usual"] == {"sku": "KOPI", "name": "Kopi"}

    # Head office changes the segment: the member is no longer in it after the next refresh.
    crm.save({"name": "pelanggan-setia", "visits": {"min": 5}})
    assert refresh_tags(hq.hq).changed == 1
    stored = store_tags.member_tags(hq.hq.store, m.id)
    assert stored is not None and "pelanggan-setia" not in stored["tags"]
    a.client.pull()
    tagging = a.till.sync.tagging(m.id)  # type: ignore[union-attr]
    assert tagging is not None and "pelanggan-setia" not in tagging.tags
    crm_store.delete_segment(hq.hq.store, "pelanggan-setia")


def test_member_snapshots_carry_tags_hints_and_as_of_on_both_backends(hq_any: HqHarness, tmp_path: Path) -> None:
    hq = hq_any
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890", name="Ani")
    a.service.record_sale(sale("A0", m.id, 50000))
    a.client.push()
    term = hq.hq.store.terminal(a.till.config.terminal)
    assert term is not None
    before = hq.hq.pull(term, 0)
    assert before.tags_as_of is None
    assert all("crm" not in ch.data for ch in before.changes if ch.kind == "member")
    advance(hq, a, days=40)
    refresh_tags(hq.hq)
    page = hq.hq.pull(term, 0, 1000)
    [snap] = [ch.data for ch in page.changes if ch.kind == "member" and ch.data["member"] == m.id]
    assert snap["crm"]["as_of"] == page.tags_as_of
    assert "lapsed-30" in snap["crm"]["tags"] and snap["crm"]["hints"]["last_visit"] == "2026-03-02"
    # An unchanged member keeps its entry; the newest refresh's as-of still moves.
    top = max(ch.seq for ch in page.changes)
    advance(hq, a, days=1)
    assert refresh_tags(hq.hq).changed == 0
    again = hq.hq.pull(term, top)
    assert not again.changes
    assert again.tags_as_of is not None and again.tags_as_of > str(page.tags_as_of)
    # Into a segment (lapsed-60) after 61 days: the member's entry moves to the end of the feed.
    advance(hq, a, days=20)
    assert refresh_tags(hq.hq).changed == 1
    [ch] = hq.hq.pull(term, top).changes
    assert ch.key == f"member:{m.id}" and "lapsed-60" in ch.data["crm"]["tags"]


def test_the_receipt_prints_the_offer_and_a_reprint_keeps_the_line(hq_offers: HqHarness, tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    m = lapsed_member(hq, a)
    r = a.service.record_sale(sale("A1", m, 50000, at=a.clock.now))

    def text(**kw: Any) -> list[str]:
        return decode(render_receipt(build_receipt(a.service, r.key, store_name="Kopi Senja", **kw), width=42)).text

    original = text()
    assert "Kembali lagi: +3 stempel" in original and "Selamat! Kamu dapat 6 stempel" in original
    assert "Welcome back: +3 stamps" not in text(language="en")  # the offer's own name, in any language
    assert "Kembali lagi: +3 stamps" in text(language="en")
    # Head office learns she came back: no tag any more. The reprint is still the original.
    a.client.push()
    advance(hq, a, days=1)
    refresh_tags(hq.hq)
    a.client.pull()
    assert "lapsed-30" not in a.till.sync.tagging(m).tags  # type: ignore[union-attr]
    assert text(copy=True)[1:-1] == original


def test_a_saved_segment_that_no_longer_parses_is_left_out_not_fatal(hq_offers: HqHarness, tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    m = lapsed_member(hq, a)
    # Written as an older version allowed it; today's parser refuses the leaf.
    crm_store.save_segment(hq.hq.store, "rusak", {"colour": "red"}, "", None, hq.clock.now)
    out = refresh_tags(hq.hq)
    assert out.skipped == ("rusak",) and "rusak" not in out.segments and "lapsed-30" in out.segments
    assert out.to_json()["skipped"] == ["rusak"]
    stored = store_tags.member_tags(hq.hq.store, m)
    assert stored is not None and "lapsed-30" in stored["tags"]


def test_a_refund_takes_the_offer_back_with_the_sale(hq_offers: HqHarness, tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    m = lapsed_member(hq, a)
    before = a.service.view(m).balance
    r = a.service.record_sale(sale("A1", m, 50000, at=a.clock.now))
    assert r.stamps_awarded == 6
    out = a.service.refund("A1")
    assert out.stamps == -6 and a.service.view(m).balance == before


def test_an_erasure_drops_the_members_tags_and_hints_at_hq_and_at_the_till(hq_offers: HqHarness,
                                                                           tmp_path: Path) -> None:
    hq = hq_offers
    a = hq.till(tmp_path, "a", "S1")
    m = lapsed_member(hq, a)
    assert store_tags.member_tags(hq.hq.store, m) is not None
    hq.hq.store.erase(m, hq.clock.now)
    assert store_tags.member_tags(hq.hq.store, m) is None
    a.client.pull()
    assert a.till.sync.tagging(m) is None  # type: ignore[union-attr]
    assert refresh_tags(hq.hq).changed == 0 and store_tags.member_tags(hq.hq.store, m) is None
    assert a.service.record_sale(sale("A1", m, 50000, at=a.clock.now)).stamps_awarded == 3  # no offer
