"""Provider webhooks and one-click unsubscribe over real loopback HTTP: signatures checked,
replays change nothing, STOP / 131050 / unsubscribe withdraw consent as HQ's own event, which
the member record shows at once and the tills' feed carries."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sync.live import serve

from tillstamp.hq import store_flows as sf
from tillstamp.hq.app import create_app
from tillstamp.hq.channels.sms import sms_signature
from tillstamp.hq.optout import make_token

from .conftest import T0, day_of, lapsed_flow, member, put_members
from .fakes import SMS_SECRET, WA_VERIFY, wa_inbound, wa_signature, wa_status

D = day_of(dt.date(2026, 3, 2))


@pytest.fixture
def live(hq_url, fake, make_engine) -> Iterator[tuple[Any, str]]:
    eng = make_engine(hq_url)
    put_members(eng.store, [member(1, last_day=D - 14), member(2)])
    app = create_app(eng.hq)
    app.state.messaging = eng.config
    with serve(app) as base:
        yield eng, base


def consent(eng: Any, m: str) -> dict[str, int]:
    from tillstamp.hq import crm_store

    row = crm_store.member_row(eng.store, m, None)
    return {k: row[f"consent_{k}"] for k in ("whatsapp", "email", "sms")}


def post_wa(base: str, payload: dict[str, Any], secret: str | None = None) -> requests.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if secret != "":
        headers["X-Hub-Signature-256"] = wa_signature(body) if secret is None else wa_signature(body, secret)
    return requests.post(f"{base}/v1/webhooks/whatsapp", data=body, headers=headers, timeout=5)


def test_the_verification_handshake_echoes_the_challenge_only_for_our_token(live):
    _, base = live
    ok = requests.get(f"{base}/v1/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": WA_VERIFY,
                                                               "hub.challenge": "1158201444"}, timeout=5)
    assert ok.status_code == 200 and ok.text == "1158201444"
    bad = requests.get(f"{base}/v1/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.verify_token": "nope",
                                                                "hub.challenge": "1"}, timeout=5)
    assert bad.status_code == 403


def test_forged_webhooks_are_refused_and_change_nothing(live):
    eng, base = live
    stop = wa_inbound("wamid.IN1", "628120000001", "STOP")
    assert post_wa(base, stop, secret="").status_code == 401
    assert post_wa(base, stop, secret="not-the-app-secret").status_code == 401
    assert consent(eng, "M00001")["whatsapp"] == 1
    assert [e for e in eng.store.member_events("M00001")] == []


def test_stop_withdraws_whatsapp_consent_as_an_hq_event_once(live):
    eng, base = live
    r = post_wa(base, wa_inbound("wamid.IN1", "628120000001", " berhenti "))
    assert r.status_code == 200 and r.json()["withdrawn"] == 1
    assert consent(eng, "M00001") == {"whatsapp": 0, "email": 1, "sms": 1}
    events = eng.store.member_events("M00001")
    assert [(e.kind, e.terminal, e.body["channel"], e.body["granted"]) for e in events] == [
        ("member.consent", "HQ", "whatsapp", False)]
    assert events[0].body["consent"] == {"whatsapp": False, "email": True, "sms": True}  # the map tills read
    # the tills' feed carries the member again, with the event in its snapshot
    page = eng.store.feed_page("none", 0, 100)
    assert "member:M00001" in [row.key for row in page.rows]
    assert [e.kind for e in page.events["M00001"]] == ["member.consent"]
    # the provider retries (or someone replays) the same body: nothing more happens
    again = post_wa(base, wa_inbound("wamid.IN1", "628120000001", " berhenti "))
    assert again.json()["duplicates"] == 1 and len(eng.store.member_events("M00001")) == 1
    # a normal reply is not a STOP
    assert post_wa(base, wa_inbound("wamid.IN2", "628120000002", "stop dulu ya kak")).json()["withdrawn"] == 0


def test_error_131050_in_a_status_withdraws_consent_and_fails_the_message(live, fake):
    eng, base = live
    eng.set_flows(lapsed_flow())
    assert eng.tick().sent == 1
    got = fake.received[0]
    failed = wa_status(got["id"], "failed", ref=got["ref"], recipient="628120000001",
                       errors=[{"code": 131050, "title": "User has stopped marketing messages"}])
    assert post_wa(base, failed).json() == {"ok": True, "applied": 1, "duplicates": 0, "withdrawn": 1}
    row = sf.messages(eng.store)[0]
    assert row["state"] == "failed" and row["delivery"] == "failed"
    assert consent(eng, "M00001")["whatsapp"] == 0
    # replayed: refused as a duplicate, no second event
    assert post_wa(base, failed).json()["duplicates"] == 1
    assert len(eng.store.member_events("M00001")) == 1


def test_status_webhooks_are_deduplicated_on_message_id_and_status(live, fake):
    eng, base = live
    eng.set_flows(lapsed_flow())
    eng.tick()
    got = fake.received[0]
    for status in ("delivered", "delivered", "read"):
        post_wa(base, wa_status(got["id"], status, ref=got["ref"]))
    row = sf.messages(eng.store)[0]
    assert row["state"] == "sent" and row["delivery"] == "read"
    # an old "delivered" replayed after "read" does not move it back
    assert post_wa(base, wa_status(got["id"], "delivered", ref=got["ref"])).json()["duplicates"] == 1
    assert sf.messages(eng.store)[0]["delivery"] == "read"
    # statuses out of order: a first "sent" arriving after "read" does not move it back either
    assert post_wa(base, wa_status(got["id"], "sent", ref=got["ref"])).json()["applied"] == 1
    assert sf.messages(eng.store)[0]["delivery"] == "read"


def post_sms(base: str, payload: dict[str, Any], *, stamp: int | None = None, secret: str = SMS_SECRET
             ) -> requests.Response:
    body = json.dumps(payload).encode()
    ts = str(stamp if stamp is not None else int(T0.timestamp()))
    return requests.post(f"{base}/v1/webhooks/sms", data=body, timeout=5,
                         headers={"X-SMS-Timestamp": ts, "X-SMS-Signature": sms_signature(secret, ts, body)})


def test_sms_callbacks_are_signed_recent_and_stop_withdraws_sms_consent(live, fake):
    eng, base = live
    eng.set_flows(lapsed_flow(channels='["sms"]'))
    assert eng.tick().sent == 1
    got = fake.received[0]
    assert post_sms(base, {"type": "status", "id": got["id"], "reference": got["ref"], "status": "delivered"},
                    secret="wrong").status_code == 401
    stale = int(T0.timestamp()) - 3600
    assert post_sms(base, {"type": "status", "id": got["id"], "reference": got["ref"], "status": "delivered"},
                    stamp=stale).status_code == 401
    ok = post_sms(base, {"type": "status", "id": got["id"], "reference": got["ref"], "status": "delivered"})
    assert ok.status_code == 200 and sf.messages(eng.store)[0]["delivery"] == "delivered"
    r = post_sms(base, {"type": "inbound", "id": "in-1", "from": "08120000001", "text": "STOP"})
    assert r.json()["withdrawn"] == 1 and consent(eng, "M00001")["sms"] == 0


def test_one_click_unsubscribe_withdraws_email_consent_on_post_only(live):
    eng, base = live
    token = make_token(eng.config.unsubscribe_secret, "M00002", "email")
    page = requests.get(f"{base}/v1/unsubscribe/{token}", timeout=5)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert consent(eng, "M00002")["email"] == 1  # a GET (a mail scanner following links) changes nothing
    r = requests.post(f"{base}/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}, timeout=5)
    assert r.status_code == 200 and consent(eng, "M00002")["email"] == 0
    forged = make_token(b"another secret", "M00001", "email")
    assert requests.post(f"{base}/v1/unsubscribe/{forged}", timeout=5).status_code == 400
    assert consent(eng, "M00001")["email"] == 1


def test_webhook_routes_answer_404_without_messaging_config(hq_url, make_engine):
    eng = make_engine(hq_url)
    with serve(create_app(eng.hq)) as base:
        assert requests.post(f"{base}/v1/webhooks/whatsapp", data=b"{}", timeout=5).status_code == 404
