"""What the web pages write and read, on SQLite and PostgreSQL alike: sessions, one-time codes,
a phone claim and the till's copy of it, consent events, and the overview's figures."""

from __future__ import annotations

from tillstamp.hq.web.customer import CustomerError
from tillstamp.loyalty import events as ev
from web.conftest import Web


def test_claim_codes_sessions_and_figures_on_both_backends(any_web: Web) -> None:
    web = any_web
    store = web.h.hq.store
    cust = web.h.app.state.customer

    # Staff session through the real login form.
    c = web.login()
    data = c.get("/?format=json").json()
    assert data["members"] == 3 and data["visits"] == 6
    assert data["stamps_outstanding"] == sum(store.balances().values())

    # A phone claim for Rina, then the same receipt claimed at the till that was offline.
    phone = cust.request_code("0812-1111-2222", "10.1.1.1")
    code = [x for to, x in web.sender.sent if to == phone][-1]
    assert cust.check_code(phone, code, "10.1.1.1") == phone
    before = store.balances()[web.rina]
    member, credited = cust.claim(web.claim_token(), phone)
    assert member == web.rina and credited == web.guest.claim_stamps
    try:
        cust.claim(web.claim_token(), phone)
        raise AssertionError("a second claim must be refused")
    except CustomerError as e:
        assert e.code == "claim_used"
    web.s1.clock.now = web.h.clock.now
    web.s1.service.claim(web.guest.claim, web.rina)
    web.s1.client.push()
    assert store.balances()[web.rina] == before + credited
    assert c.get(f"/members/{web.rina}?format=json").json()["balance"] == before + credited
    assert sum(e.kind == ev.CLAIMED for e in store.member_events(web.rina)) == 1

    # Consent from the phone is an HQ event in the read model.
    cust.set_consent(web.rina, {"email": True})
    got = c.get(f"/members/{web.rina}?format=json").json()["consent"]
    assert got == {"whatsapp": False, "email": True, "sms": False}
