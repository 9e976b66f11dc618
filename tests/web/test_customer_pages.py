"""The customer's pages: a receipt claimed on the phone with a one-time code credits its
stamps once (also against the same receipt claimed at a till), codes are 6 digits, live 10
minutes, allow 5 tries and are rate limited, and no answer says whether a phone is a member."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tillstamp.hq.web import store_web
from tillstamp.hq.web.customer import CODE_TRIES, CustomerError
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import derived_id
from web.conftest import Web, csrf_of


def _ask_code(web: Web, c: TestClient, path: str, phone: str) -> Any:
    pre = csrf_of(c.get(path).text)
    return c.post(path, data={"csrf": pre, "phone": phone}, follow_redirects=False)


def _last_code(web: Web, phone: str) -> str:
    sent = [code for to, code in web.sender.sent if to == phone]
    assert sent, f"no code sent to {phone}"
    return sent[-1]


def _claim(web: Web, c: TestClient, token: str, phone_text: str, e164: str) -> Any:
    r = _ask_code(web, c, f"/k/{token}", phone_text)
    assert r.status_code == 200 and 'id="code-form"' in r.text
    return c.post(f"/k/{token}", data={"csrf": csrf_of(r.text), "phone": e164, "code": _last_code(web, e164)},
                  follow_redirects=False)


def test_claim_page_shows_the_receipt_and_credits_a_new_member_once(web: Web) -> None:
    token = web.claim_token()
    c = web.client()
    page = c.get(f"/k/{token}")
    assert page.status_code == 200
    assert 'id="claim-shop">S1<' in page.text and "2026-03-02" in page.text
    stamps = web.guest.claim_stamps
    assert stamps > 0 and f"{stamps} stempel dari struk ini" in page.text
    assert c.get(f"/k/{token}?format=json").json()["status"] == "open"

    r = _claim(web, c, token, "0857 1234 5678", "+6285712345678")
    assert r.status_code == 303 and r.headers["location"] == f"/saya?claimed={stamps}"
    member = store_web.member_by_phone(web.h.hq.store, "+6285712345678")
    assert member is not None
    assert web.h.hq.store.balances()[member] == stamps
    me = c.get("/saya?format=json").json()["member"]
    assert me["member"] == member and me["balance"] == stamps
    claim_events = [e for e in web.h.hq.store.member_events(member) if e.kind == ev.CLAIMED]
    assert len(claim_events) == 1

    # The same QR again, by anyone: refused, nothing credited.
    c2 = web.client()
    assert c2.get(f"/k/{token}?format=json").json()["status"] == "claimed"
    assert "Struk ini sudah diklaim" in c2.get(f"/k/{token}").text
    with pytest.raises(CustomerError) as e:
        web.h.app.state.customer.claim(token, "+6281111111111")
    assert e.value.code == "claim_used"
    assert web.h.hq.store.balances()[member] == stamps


def test_a_receipt_claimed_on_the_phone_and_at_an_offline_till_counts_once(web: Web) -> None:
    token = web.claim_token()
    c = web.client()
    _claim(web, c, token, "0812-1111-2222", "+6281211112222")  # Rina, a member already
    after_phone = web.h.hq.store.balances()[web.rina]
    # Meanwhile the till, offline, let Rina claim the printed QR too: it derives the same id.
    web.s1.clock.now = web.h.clock.now
    out = web.s1.service.claim(web.guest.claim, web.rina)
    assert out.stamps == web.guest.claim_stamps
    web.s1.client.push()
    claims = [e for e in web.h.hq.store.member_events(web.rina) if e.kind == ev.CLAIMED]
    assert [e.id for e in claims] == [derived_id("claim", claims[0].body["token"])]
    assert web.h.hq.store.balances()[web.rina] == after_phone
    assert web.login().get(f"/members/{web.rina}?format=json").json()["balance"] == after_phone  # read model
    web.s1.client.pull()
    assert web.s1.service.view(web.rina).balance == after_phone


def test_a_claim_made_at_a_till_first_is_refused_on_the_phone(web: Web) -> None:
    token = web.claim_token()
    web.s1.clock.now = web.h.clock.now
    web.s1.service.claim(web.guest.claim, web.rina)
    web.s1.client.push()
    c = web.client()
    assert c.get(f"/k/{token}?format=json").json()["status"] == "claimed"
    page = c.get(f"/k/{token}").text
    assert 'id="phone-form"' not in page and "sudah diklaim" in page


def test_a_forged_or_expired_claim_is_refused(web: Web) -> None:
    token = web.claim_token()
    forged = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    c = web.client()
    r = c.get(f"/k/{forged}")
    assert r.status_code == 400 and "tidak sah" in r.text
    web.h.clock.advance(days=8)
    r = c.get(f"/k/{token}")
    assert r.status_code == 410 and "kedaluwarsa" in r.text


def test_codes_have_six_digits_five_tries_and_ten_minutes(web: Web) -> None:
    cust = web.h.app.state.customer
    phone = cust.request_code("0811-000-111", "10.0.0.1")
    code = _last_code(web, phone)
    assert len(code) == 6 and code.isdigit()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(CODE_TRIES):
        with pytest.raises(CustomerError):
            cust.check_code(phone, wrong, "10.0.0.1")
    with pytest.raises(CustomerError):  # out of tries: even the right code is refused now
        cust.check_code(phone, code, "10.0.0.1")

    phone = cust.request_code("0811-000-111", "10.0.0.1")
    code = _last_code(web, phone)
    web.h.clock.advance(minutes=10, seconds=1)
    with pytest.raises(CustomerError):
        cust.check_code(phone, code, "10.0.0.1")

    phone = cust.request_code("0811-000-111", "10.0.0.1")
    code = _last_code(web, phone)
    assert cust.check_code("+62811000111", code, "10.0.0.1") == "+62811000111"
    with pytest.raises(CustomerError):  # used once
        cust.check_code(phone, code, "10.0.0.1")


def test_codes_are_rate_limited_per_phone_and_per_address(web: Web) -> None:
    cust = web.h.app.state.customer
    for _ in range(3):
        cust.request_code("0811-222-333", "10.0.0.2")
    with pytest.raises(CustomerError) as e:
        cust.request_code("0811 222 333", "10.0.0.3")
    assert e.value.code == "too_many"
    for i in range(10):
        cust.request_code(f"0811-444-{i:03d}", "10.0.0.9")
    with pytest.raises(CustomerError):
        cust.request_code("0811-555-000", "10.0.0.9")
    web.h.clock.advance(minutes=31)
    cust.request_code("0811-222-333", "10.0.0.2")


def test_no_answer_says_whether_a_phone_is_a_member(web: Web) -> None:
    def answer(phone: str) -> str:
        c = web.client()
        r = _ask_code(web, c, "/saya", phone)
        assert r.status_code == 200
        return r.text.replace(phone, "PHONE").replace(csrf_of(r.text), "CSRF")

    member, stranger = answer("+6281211112222"), answer("+6289999999999")
    assert member == stranger


def test_member_page_consent_download_and_delete(web: Web) -> None:
    c = web.client()
    r = _ask_code(web, c, "/saya", "0812-1111-2222")
    r = c.post("/saya", data={"csrf": csrf_of(r.text), "phone": "+6281211112222",
                              "code": _last_code(web, "+6281211112222")}, follow_redirects=False)
    assert r.status_code == 303
    page = c.get("/saya")
    assert "<svg" in page.text and 'id="me-balance"' in page.text
    card = c.get("/saya?format=json").json()["member"]
    assert card["member"] == web.rina and card["consent"] == {"whatsapp": True, "email": False, "sms": False}
    assert card["card_token"].startswith("TS1M")

    csrf = csrf_of(page.text)
    c.post("/saya/consent", data={"csrf": csrf, "sms": "1"}, follow_redirects=False)
    assert c.get("/saya?format=json").json()["member"]["consent"] == {"whatsapp": False, "email": False, "sms": True}
    staff = web.login()
    assert staff.get(f"/members/{web.rina}?format=json").json()["consent"]["sms"] is True
    web.s1.client.pull()  # the consent event reaches the till
    consents = [e for e in web.s1.till.service.member_events(web.rina) if e.kind == ev.CONSENT]
    assert consents and consents[-1].body["consent"]["sms"] is True

    data = c.get("/saya/data.json").json()
    assert data["profile"]["phone"] == "+6281211112222" and len(data["events"]) > 3

    assert c.post("/saya/consent", data={"sms": "1"}).status_code == 403  # no token: refused
    r = c.post("/saya/delete", data={"csrf": csrf, "confirm": "HAPUS"})
    assert r.status_code == 200 and "Akunmu sudah dihapus" in r.text
    assert staff.get(f"/members/{web.rina}?format=json").json()["erased"] == 1
    assert c.get("/saya?format=json").status_code == 200 and 'id="phone-form"' in c.get("/saya").text


def test_whatsapp_and_sms_senders_speak_their_apis(web: Web) -> None:
    from tillstamp.hq.web.codes import CodeSendError, load_web_config
    from web.fakes import FakeProvider

    with FakeProvider() as fake:
        toml = web.h.hq.store  # placeholder to keep the store alive
        del toml
        cfg_wa = _config(fake.url, "whatsapp")
        cfg_sms = _config(fake.url, "sms")
        cfg = load_web_config(cfg_wa, env={"WA_TOKEN": "wa-secret", "SMS_TOKEN": "sms-secret"})
        assert cfg.public_url == "https://hq.example.id" and cfg.secure
        cfg.sender.send_code("+6281211112222", "123456")
        path, headers, body = fake.requests[-1]
        assert path == "/v21.0/PNID/messages" and headers["authorization"] == "Bearer wa-secret"
        assert body["to"] == "6281211112222" and body["type"] == "template"
        assert body["template"]["name"] == "kode_masuk"
        assert body["template"]["components"][0]["parameters"] == [{"type": "text", "text": "123456"}]
        cfg = load_web_config(cfg_sms, env={"WA_TOKEN": "wa-secret", "SMS_TOKEN": "sms-secret"})
        cfg.sender.send_code("+6281211112222", "654321")
        path, headers, body = fake.requests[-1]
        assert path == "/sms" and body["to"] == "+6281211112222" and "654321" in body["text"]
        assert headers["authorization"] == "Bearer sms-secret" and body["from"] == "KOPI"
        fake.fail = True
        with pytest.raises(CodeSendError):
            cfg.sender.send_code("+6281211112222", "000000")


def _config(url: str, channel: str) -> Any:
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp())
    p = d / "hq.toml"
    # the customer pages' codes go through the automations' channels: one hq.toml, one reader
    p.write_text(f'[channels.whatsapp]\napi_base = "{url}/v21.0"\nphone_number_id = "PNID"\n'
                 f'token_env = "WA_TOKEN"\napp_secret_env = "WA_TOKEN"\n'
                 f'[channels.sms]\nurl = "{url}/sms"\ntoken_env = "SMS_TOKEN"\n'
                 f'[messaging]\npublic_url = "https://hq.example.id"\n'
                 f'[otp]\nchannel = "{channel}"\ntemplate = "kode_masuk"\nsender = "KOPI"\n',
                 encoding="utf-8")
    return p


def test_bad_web_config_is_one_clear_error(tmp_path: Any) -> None:
    from tillstamp.hq.web.codes import ConfigError, load_web_config

    p = tmp_path / "hq.toml"
    p.write_text('[otp]\nchannel = "pigeon"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="otp.channel"):
        load_web_config(p, env={})
    p.write_text('[otp]\nchannel = "sms"\n', encoding="utf-8")  # no [channels.sms] to send through
    with pytest.raises(ConfigError, match=r"needs \[channels.sms\]"):
        load_web_config(p, env={})
    p.write_text('[channels.sms]\nurl = "http://x"\ntoken_env = "NOPE"\n[otp]\nchannel = "sms"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="NOPE"):
        load_web_config(p, env={})
    p.write_text('[web]\npublic_url = "https://x"\n', encoding="utf-8")  # the old second format is refused
    with pytest.raises(ConfigError, match="web"):
        load_web_config(p, env={})
    assert load_web_config(None).secure is False
    _ = dt
