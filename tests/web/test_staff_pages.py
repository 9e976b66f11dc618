"""The staff dashboard over real tills' data: login and sessions, JSON twins with the same data
as the pages, managers kept to their store, CSRF on every POST, program publishing, audit."""

from __future__ import annotations

import re
from typing import Any

from tillstamp.hq import crm_store
from web.conftest import PASSWORD, XSS, Web, csrf_of, pre_token

PAGES = ("/", "/stores", "/members?q=Rina", "/segments", "/flows", "/programs")


def test_pages_need_a_session_and_login_sets_a_strict_cookie(web: Web) -> None:
    c = web.client()
    for path in PAGES:
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        assert c.get(path + ("&" if "?" in path else "?") + "format=json").status_code == 401
    r = c.post("/login", data={"csrf": pre_token(c), "name": "owner", "password": "wrong password!",
                               "next": "/"}, follow_redirects=False)
    assert r.status_code == 401 and "Nama pengguna atau kata sandi salah" in r.text
    assert "ts_staff" not in c.cookies

    s = web.client(https=True)
    r = s.post("/login", data={"csrf": pre_token(s), "name": "owner", "password": PASSWORD, "next": "/stores"},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/stores"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    assert s.get("/stores").status_code == 200

    # Log out: the session is gone at HQ, not only in the browser.
    stolen = s.cookies.get("ts_staff")
    html = s.get("/").text
    assert s.post("/logout", data={"csrf": csrf_of(html)}, follow_redirects=False).status_code == 303
    again = web.client(https=True)
    again.cookies.set("ts_staff", stolen)
    assert again.get("/", follow_redirects=False).status_code == 303


def test_login_refuses_an_open_redirect_and_a_form_without_its_token(web: Web) -> None:
    c = web.client()
    r = c.post("/login", data={"csrf": pre_token(c), "name": "owner", "password": PASSWORD,
                               "next": "//evil.example/"}, follow_redirects=False)
    assert r.headers["location"] == "/"
    c2 = web.client()
    c2.get("/login")
    r = c2.post("/login", data={"name": "owner", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403 and "ts_staff" not in c2.cookies


def test_login_attempts_are_rate_limited_per_user(web: Web) -> None:
    c = web.client()
    tok = pre_token(c)
    codes = [c.post("/login", data={"csrf": tok, "name": "maya", "password": f"guess-{i:04d}xx"},
                    follow_redirects=False).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    # Even the right password waits out the window: a guesser cannot tell it was right.
    r = c.post("/login", data={"csrf": tok, "name": "maya", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 429
    web.h.clock.advance(minutes=16)
    assert c.post("/login", data={"csrf": tok, "name": "maya", "password": PASSWORD},
                  follow_redirects=False).status_code == 303


def _json(c: Any, path: str) -> Any:
    r = c.get(path + ("&" if "?" in path else "?") + "format=json")
    assert r.status_code == 200, r.text
    return r.json()


def test_overview_json_twin_holds_the_figures_the_page_shows(web: Web) -> None:
    c = web.login()
    data = _json(c, "/")
    for key in ("members", "active_30d", "sales", "stamps_issued", "stamps_redeemed", "stamps_outstanding"):
        assert key in data
    assert data["members"] == 3
    assert data["active_30d"] == 3
    assert data["visits"] == 6 and data["sales"] == 3 * 60_000 + 30_000 + 80_000 + 75_000
    balances = web.h.hq.store.balances()
    assert data["stamps_outstanding"] == sum(balances.values()) > 0
    assert data["stamps_issued"] == sum(balances.values()) and data["stamps_redeemed"] == 0
    assert data["repeat_rate"] == round(1 / 3, 4)  # Rina came three times; the others once
    assert sorted(data["stores"]) == ["S1", "S2"]
    html = c.get("/").text
    assert f'<b id="t-members">{data["members"]}</b>' in html
    assert f'<b id="t-outstanding">{data["stamps_outstanding"]}</b>' in html
    assert "<svg" in html and "http://" not in html.split("<main>")[1]  # charts drawn inline, nothing fetched

    s2 = _json(c, "/?store=S2")
    assert s2["store"] == "S2" and s2["visits"] == 1 and s2["sales"] == 80_000


def test_a_manager_sees_only_their_store(web: Web) -> None:
    c = web.login("mgr1")
    data = _json(c, "/?store=S2")  # asking for another store changes nothing
    assert data["store"] == "S1" and data["stores"] == []
    assert data["sales"] == 3 * 60_000 + 30_000 + 75_000
    assert {t["store"] for t in _json(c, "/stores")["terminals"]} == {"S1"}
    assert c.get(f"/members/{web.rina}").status_code == 200
    r = c.get(f"/members/{web.budi}")
    assert r.status_code == 404 and "Budi" not in r.text
    assert c.get(f"/members/{web.budi}?format=json").status_code == 404
    assert _json(c, "/members?q=Budi")["members"] == []


def test_member_360_and_search(web: Web) -> None:
    c = web.login()
    hits = _json(c, "/members?q=0812-1111-2222")["members"]
    assert [h["member"] for h in hits] == [web.rina]
    m = _json(c, f"/members/{web.rina}")
    assert m["name"] == "Rina Wijaya" and m["consent"]["whatsapp"] is True and m["consent"]["sms"] is False
    assert m["balance"] == web.h.hq.store.balances()[web.rina]
    assert len(m["sales"]) == 3 and m["card"]["size"] == 10
    html = c.get(f"/members/{web.rina}").text
    assert f'<dd id="balance">{m["balance"]}</dd>' in html


def test_a_name_with_markup_is_text_everywhere(web: Web) -> None:
    c = web.login()
    for path in (f"/members?q={web.evil}", f"/members/{web.evil}"):
        html = c.get(path).text
        assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert _json(c, f"/members/{web.evil}")["name"] == XSS


def test_posts_without_the_csrf_token_are_refused_and_change_nothing(web: Web) -> None:
    c = web.login()
    before = web.h.hq.store.program()
    r = c.post("/programs", data={"source": '{"program": {"name": "x"}}'})
    assert r.status_code == 403 and "Formulir kedaluwarsa" in r.text
    assert web.h.hq.store.program() == before
    r = c.post("/segments/save", data={"definition": '{"visits": {"min": 1}}', "name": "evil"})
    assert r.status_code == 403 and crm_store.get_segment(web.h.hq.store, "evil") is None
    r = c.post("/segments/preview", json={"definition": {"visits": {"min": 1}}})
    assert r.status_code == 403
    r = c.post(f"/members/{web.rina}/erase", data={"confirm": "HAPUS", "csrf": "forged"})
    assert r.status_code == 403 and _json(c, f"/members/{web.rina}")["erased"] == 0
    assert c.post("/logout", data={}).status_code == 403 and c.get("/").status_code == 200


def test_segment_preview_save_export_is_audited(web: Web) -> None:
    c = web.login("maya")
    csrf = csrf_of(c.get("/segments").text)
    r = c.post("/segments/preview", json={"definition": {"visits": {"min": 2}}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200 and r.json()["count"] == 1
    r = c.post("/segments/preview", json={"definition": {"visits": {"min": "two"}}}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "visits" in r.json()["message"]
    r = c.post("/segments/save", data={"csrf": csrf, "name": "regulars", "definition": '{"visits": {"min": 2}}'},
               follow_redirects=False)
    assert r.status_code == 303
    seg = next(s for s in _json(c, "/segments")["segments"] if s["name"] == "regulars")
    assert seg["sizes"][-1]["size"] == 1
    r = c.get("/segments/regulars/export.csv")
    assert r.status_code == 200 and web.rina in r.text and web.budi not in r.text
    log = crm_store.audit_log(web.h.hq.store)
    assert log[0]["action"] == "segment.export" and log[0]["actor"] == "maya"


def test_program_publish_is_validated_and_shows_the_error(web: Web) -> None:
    c = web.login()
    html = c.get("/programs").text
    csrf = csrf_of(html)
    v0 = web.h.hq.store.program()[0]
    r = c.post("/programs", data={"csrf": csrf, "source": "[program]\nname = 'x'\n[card]\nsize = -3\n"})
    assert r.status_code == 422 and 'id="program-error"' in r.text
    assert web.h.hq.store.program()[0] == v0
    src = dict(web.h.hq.store.program()[1])
    src["program"] = {**src.get("program", {}), "name": "Kopi Senja 2027"}  # the same content is no new version
    import json

    r = c.post("/programs", data={"csrf": csrf, "source": json.dumps(src)})
    assert r.status_code == 200 and f"versi {v0 + 1} diterbitkan" in r.text
    assert web.h.hq.store.program()[0] == v0 + 1
    assert crm_store.audit_log(web.h.hq.store)[0]["action"] == "program.publish"
    # A marketer sees the program but may not publish one.
    m = web.login("maya")
    assert 'id="publish"' not in m.get("/programs").text
    r = m.post("/programs", data={"csrf": csrf_of(m.get("/programs").text), "source": json.dumps(src)})
    assert r.status_code == 403 and web.h.hq.store.program()[0] == v0 + 1


def test_owner_erasure_is_audited(web: Web) -> None:
    c = web.login()
    csrf = csrf_of(c.get(f"/members/{web.budi}").text)
    assert c.post(f"/members/{web.budi}/erase", data={"csrf": csrf, "confirm": "HAPUS"},
                  follow_redirects=False).status_code == 303
    m = _json(c, f"/members/{web.budi}")
    assert m["erased"] == 1 and m["name"] is None
    entry = crm_store.audit_log(web.h.hq.store)[0]
    assert (entry["action"], entry["target"], entry["actor"]) == ("member.erase", web.budi, "owner")


def test_english_switch_is_kept(web: Web) -> None:
    c = web.login()
    assert "Ringkasan" in c.get("/").text
    assert "Overview" in c.get("/?lang=en").text
    assert "Overview" in c.get("/stores").text and re.search(r"Sync lag", c.get("/stores").text)
