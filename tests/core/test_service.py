"""The till's service on a real (in-memory) SQLite store."""

from __future__ import annotations

import datetime as dt

import pytest
from support import sale_dict

from tillstamp.agent import ledger
from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Refused, Service
from tillstamp.agent.store import open_store
from tillstamp.loyalty.sale import SaleError, parse_sale


def record(service: Service, d: dict):
    return service.record_sale(parse_sale(d, now=service.now()))


def refused(fn) -> str:
    with pytest.raises(Refused) as err:
        fn()
    return err.value.reason


@pytest.fixture
def budi(service):
    return service.enroll("0812-3456-7890", "Budi Santoso", consent=["whatsapp", "email"])


def test_phone_formats_are_one_member(service, budi):
    assert budi.phone == "+6281234567890"
    for text in ("0812-3456-7890", "+62 812 3456 7890", "6281234567890", "(0812) 3456 7890"):
        assert service.identify(text).id == budi.id
    assert refused(lambda: service.enroll("+62 812-3456-7890")) == "already_enrolled"
    assert refused(lambda: service.identify("0812-0000-0000")) == "unknown_member"
    assert refused(lambda: service.identify("12345")) == "unknown_member"
    assert refused(lambda: service.enroll("0800-1")) == "invalid_phone"


def test_enrol_validates_every_field(service):
    assert refused(lambda: service.enroll("081299998888", email="not-an-email")) == "invalid_email"
    assert refused(lambda: service.enroll("081299998888", birthday="17-05-1990")) == "invalid_birthday"
    assert refused(lambda: service.enroll("081299998888", birthday="2999-01-01")) == "invalid_birthday"
    assert refused(lambda: service.enroll("081299998888", consent=["fax"])) == "invalid_consent"
    assert service.store.count_events() == 0
    m = service.enroll("081299998888", "Sari", "sari@example.id", "1990-05-17", ["sms"])
    assert service.store.consent(m.id) == {"whatsapp": False, "email": False, "sms": True}


def test_a_sale_is_recorded_exactly_once(service, budi):
    first = record(service, sale_dict("R-0001", member=budi.phone))
    assert (first.stamps_awarded, first.balance, first.duplicate) == (3, 3, False)
    again = record(service, sale_dict("R-0001", member=budi.phone))
    assert (again.stamps_awarded, again.balance, again.duplicate) == (0, 3, True)
    # Same receipt number, different content: another sale, refused, nothing written.
    n = service.store.count_events()
    with pytest.raises(Refused) as e:
        record(service, sale_dict("R-0001", member=budi.phone, lines=[{"sku": "X", "qty": 9, "price": 9}]))
    assert e.value.reason == "receipt_reused"
    assert service.store.balance(budi.id) == 3 and service.store.count_events() == n


def test_daily_numbering_keys_by_business_day(fresh_store, program, keys, clock):
    clock.advance(days=2)  # the sales below are in the till's past
    svc = Service(fresh_store, program, keys, store_id="S", terminal_id="T1", daily_receipts=True, clock=clock)
    a = record(svc, sale_dict("0001", at="2026-11-23T09:00:00+07:00"))
    b = record(svc, sale_dict("0001", at="2026-11-24T09:00:00+07:00"))
    # 23:30 UTC on the 23rd is the 24th in Jakarta: the same business day as b, so the same
    # key; with other content it is another sale under a used number, refused.
    assert (a.duplicate, b.duplicate) == (False, False)
    assert refused(lambda: record(svc, sale_dict("0001", at="2026-11-23T23:30:00+00:00"))) == "receipt_reused"


def test_sale_without_member_returns_a_claim_that_works_once(service, budi):
    r = record(service, sale_dict("R-0002"))
    assert r.member is None and r.claim and r.claim_stamps == 3 and r.stamps_awarded == 0
    # A retry of the same sale gives the very same claim QR (the POS may have lost the answer).
    assert record(service, sale_dict("R-0002")).claim == r.claim
    out = service.claim(r.claim, budi.phone)
    assert out.stamps == 3 and out.balance == 3
    assert refused(lambda: service.claim(r.claim, budi.id)) == "token_already_claimed"
    assert refused(lambda: service.claim(r.claim[:-10], budi.id)).startswith("token_")
    assert service.store.balance(budi.id) == 3


def test_claim_expires(service, budi, clock):
    r = record(service, sale_dict("R-0003"))
    clock.advance(days=8)
    assert refused(lambda: service.claim(r.claim, budi.id)) == "token_expired"


def test_claim_of_a_refunded_sale_is_refused(service, budi):
    r = record(service, sale_dict("R-0004"))
    service.refund("R-0004")
    assert refused(lambda: service.claim(r.claim, budi.id)) == "refunded"


def test_refunds_take_stamps_back_in_proportion(service, budi):
    lines = [{"sku": "LATTE", "qty": 4, "price": 25000, "category": "coffee"}]
    r = record(service, sale_dict("R-0005", member=budi.id, lines=lines))
    assert r.stamps_awarded == 5  # 1 visit + 4 spend
    part = service.refund("R-0005", {"LATTE": 1})
    assert part.stamps == -1  # a quarter of 5, rounded
    assert refused(lambda: service.refund("R-0005", {"LATTE": 4})) == "invalid_refund"
    assert refused(lambda: service.refund("R-0005", {"MOCHA": 1})) == "invalid_refund"
    rest = service.refund("R-0005")
    assert rest.stamps == -4 and service.store.balance(budi.id) == 0
    assert refused(lambda: service.refund("R-0005")) == "already_refunded"
    assert refused(lambda: service.refund("R-9999")) == "unknown_sale"


def test_refund_never_takes_the_balance_below_zero(service, budi):
    record(service, sale_dict("R-0006", member=budi.id, lines=[{"sku": "L", "qty": 1, "price": 250000}]))
    service.redeem(budi.id, "pastry-gratis")  # 6 of the 6 stamps spent
    out = service.refund("R-0006")
    assert out.balance == 0 and out.detail["uncollected"] == 6


def test_redemption_refusals(service, budi):
    record(service, sale_dict("R-0007", member=budi.id, lines=[{"sku": "L", "qty": 1, "price": 250000}]))
    assert refused(lambda: service.redeem(budi.id, "kopi-gratis")) == "insufficient_balance"
    assert refused(lambda: service.redeem(budi.id, "tumbler")) == "tier_not_allowed"
    assert refused(lambda: service.redeem(budi.id, "mobil")) == "unknown_reward"
    out = service.redeem(budi.id, "pastry-gratis")
    assert out.balance == 0


def test_expired_stamps_cannot_be_redeemed(service, budi, clock):
    record(service, sale_dict("R-0008", member=budi.id, lines=[{"sku": "L", "qty": 1, "price": 250000}]))
    clock.advance(days=400)
    assert refused(lambda: service.redeem(budi.id, "pastry-gratis")) == "insufficient_balance"
    # The refusal changed nothing; the view already counts the expiry...
    assert service.view(budi.id).balance == 0
    assert service.store.balance(budi.id) == 6
    # ...and the next write for the member writes it off as an event.
    record(service, sale_dict("R-0009", member=budi.id, at=None))
    assert [e.stamps for e in service.store.member_events(budi.id) if e.kind == "stamps.expired"] == [-6]
    assert service.store.balance(budi.id) == 3
    assert ledger.verify(service.store).ok


def test_member_card_from_another_till_is_accepted(fresh_store, program, clock, service, budi):
    # Both tills trust the same member-signing key (as head office's would be).
    other_keys = Keys("T2", Keys.generate("T2").terminal, member_keys=dict(service.keys.member_keys))
    other = Service(open_store(":memory:"), program, other_keys, store_id="BDG-01", terminal_id="T2", clock=clock)
    card = service.member_card(budi.id)
    r = record(other, sale_dict("B-1", member=card))
    assert r.member == budi.id and r.stamps_awarded == 3
    # But a card signed by an untrusted key is not.
    rogue = Service(open_store(":memory:"), program, Keys.generate("T9"), store_id="X", terminal_id="T9", clock=clock)
    rogue.store  # noqa: B018
    with rogue.store.write():
        from tillstamp.agent.store import MemberRow

        rogue.store.add_member(MemberRow(budi.id, None, None, None, None, "test", None), 0)
    forged = rogue.member_card(budi.id)
    assert refused(lambda: other.identify(forged)) == "token_unknown_key"
    assert refused(lambda: other.identify(card[:-4])) == "token_malformed"
    assert refused(lambda: other.identify("TS9M" + card[4:])) == "token_unknown_version"


def test_missions_award_bonus_stamps_once(service, budi, clock):
    results = []
    for i in range(3):
        results.append(record(service, sale_dict(f"M-{i}", member=budi.id)))
        clock.advance(hours=1)
    assert results[-1].missions == ("rajin-ngopi",)
    assert results[-1].stamps_awarded == 3 + 2
    again = record(service, sale_dict("M-9", member=budi.id))
    assert "rajin-ngopi" not in again.missions


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"lines": [{"sku": "A", "qty": 1, "price": 1}], "total": 1},
        {"receipt": "X", "lines": [], "total": 0},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 0, "price": 1}], "total": 0},
        {"receipt": "X", "lines": [{"sku": "A", "qty": -2, "price": 1}], "total": -2},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 1, "price": -5}], "total": -5},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 1.5, "price": 5}], "total": 5},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 1, "price": 5}], "total": 6},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 1, "price": 5}], "total": 5, "at": "yesterday"},
        {"receipt": "X", "lines": [{"sku": "A", "qty": 1, "price": 5}], "total": 5, "at": "2026-11-23T09:00:00"},
        {"receipt": "X", "lines": [{"sku": "A", "qty": True, "price": 5}], "total": 5},
    ],
)
def test_bad_sales_are_refused(service, bad):
    with pytest.raises(SaleError):
        parse_sale(bad, now=service.now())


def test_refused_requests_change_nothing(service, budi):
    record(service, sale_dict("R-1", member=budi.id))
    before = (service.store.count_events(), service.store.projection_snapshot())
    for fn in (
        lambda: record(service, sale_dict("R-2", member="0812-0000-1111")),
        lambda: record(service, sale_dict("R-3", member="TS1MAAAA")),
        lambda: service.redeem(budi.id, "kopi-gratis"),
        lambda: service.redeem(budi.id, "nope"),
        lambda: service.claim("HTTPS://X/TS1CAAAA", budi.id),
        lambda: service.refund("R-404"),
        lambda: service.enroll("bukan nomor"),
    ):
        with pytest.raises(Refused):
            fn()
    assert (service.store.count_events(), service.store.projection_snapshot()) == before
    assert ledger.verify(service.store).ok


def test_timezone_aware_everywhere(service, budi):
    record(service, sale_dict("R-9", member=budi.id))
    for e in service.store.events():
        assert e.at.tzinfo is not None
    assert service.now().tzinfo is not None
    assert isinstance(service.now(), dt.datetime)


def test_expiry_is_not_written_off_on_an_untrusted_clock(service, budi, clock):
    # Rule 9: a till whose clock runs far ahead must not take stamps away as "expired".
    record(service, sale_dict("R-0010", member=budi.id, lines=[{"sku": "L", "qty": 1, "price": 250000}]))
    clock.advance(days=400)
    service.clock_trusted = lambda: False
    record(service, sale_dict("R-0011", member=budi.id, at=None))
    assert not [e for e in service.store.member_events(budi.id) if e.kind == "stamps.expired"]
    assert service.store.balance(budi.id) == 6 + 3
    service.clock_trusted = lambda: True
    record(service, sale_dict("R-0012", member=budi.id, at=None))
    assert [e.stamps for e in service.store.member_events(budi.id) if e.kind == "stamps.expired"] == [-6]
