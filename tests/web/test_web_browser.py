"""The dashboard and the customer's pages in a real headless Chromium (Debian's), over real
HTTP on loopback: login and logout, every page without a console error at 1280x800, the
segment builder's live count, the claim flow and the card at 390x844, markup in a name shown
as text, CSRF refusals, a manager kept to their store, and screenshots checked for their text."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import ARGS, CHROMIUM, require_chromium

from web.conftest import PASSWORD, XSS, Web

require_chromium()

import uvicorn
from playwright.sync_api import Page, expect, sync_playwright

SHOTS = Path(os.environ.get("TILLSTAMP_SHOTS", "")) if os.environ.get("TILLSTAMP_SHOTS") else None


@pytest.fixture
def served(web: Web) -> Iterator[tuple[Web, str]]:
    """The HQ app on a loopback port (uvicorn in a thread)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A browser may still hold keep-alive connections when this fixture ends first: do not wait
    # on them for ever (uvicorn's default), which made each teardown sit out the join below.
    server = uvicorn.Server(uvicorn.Config(web.h.app, host="127.0.0.1", port=port, log_level="error",
                                           timeout_graceful_shutdown=1))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(500):  # until it listens (not a timing assertion: a readiness wait)
        if server.started:
            break
        time.sleep(0.01)
    yield web, f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _page(browser: Any, width: int, height: int) -> tuple[Page, list[str]]:
    """A page that records console errors, page errors and any dialog (an executed alert())."""
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))

    def dialog(d: Any) -> None:
        problems.append(f"dialog: {d.message}")
        d.dismiss()
    page.on("dialog", dialog)
    return page, problems


def _login(page: Page, url: str, name: str = "owner") -> None:
    page.goto(url + "/")
    expect(page).to_have_url(url + "/login?next=/")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login button[type=submit]")
    expect(page).to_have_url(url + "/")


def test_staff_pages_in_a_browser(served: tuple[Web, str], browser: Any, tmp_path: Path) -> None:
    web, url = served
    page, problems = _page(browser, 1280, 800)
    _login(page, url)
    expect(page.locator("#t-members")).to_have_text("3")
    shot = (SHOTS or tmp_path) / "overview.png"
    page.screenshot(path=str(shot), full_page=True)
    text = page.inner_text("body")
    for want in ("Ringkasan", "Member", "Stempel beredar (kewajiban)", "Kunjungan per hari", "Member per tingkat"):
        assert want in text
    assert shot.stat().st_size > 10_000

    for path, marker in (("/stores", "#terminals"), (f"/members?q={web.evil}", "#results"),
                         (f"/members/{web.rina}", "#history"), (f"/members/{web.evil}", "#history"),
                         ("/segments", "#segments"), ("/flows", "#flows-empty"), ("/programs", "#publish"),
                         ("/audit", "#audit"), ("/?lang=en", "#tiles")):
        page.goto(url + path)
        expect(page.locator(marker)).to_be_visible()
    # A name made of markup is text: shown literally, never run.
    page.goto(url + f"/members?q={web.evil}")
    expect(page.locator("#results td.name")).to_have_text(XSS)
    page.goto(url + f"/members/{web.evil}")
    expect(page.locator("#member-name")).to_have_text(XSS)
    assert problems == []

    # The segment builder counts as the conditions change.
    page.goto(url + "/segments")
    expect(page.locator("#live-count")).to_have_text("3")  # {"visits": {"min": 1}}
    page.fill("#c-visits", "2")
    expect(page.locator("#live-count")).to_have_text("1")
    page.fill("#c-store", "S2")
    expect(page.locator("#live-count")).to_have_text("0")
    page.fill("#c-visits", "")
    expect(page.locator("#live-count")).to_have_text("1")
    assert problems == []

    # A POST without the form's token is refused, even with the session cookie.
    r = page.request.post(url + "/programs", form={"source": "{}"})
    assert r.status == 403
    r = page.request.post(url + "/segments/preview", data={"definition": {"visits": {"min": 1}}})
    assert r.status == 403

    page.click("#logout")
    expect(page).to_have_url(url + "/login")
    page.goto(url + "/stores")
    expect(page).to_have_url(url + "/login?next=/stores")


def test_a_manager_cannot_open_another_stores_member(served: tuple[Web, str], browser: Any) -> None:
    web, url = served
    page, problems = _page(browser, 1280, 800)
    _login(page, url, "mgr1")
    page.goto(url + f"/members/{web.rina}")
    expect(page.locator("#member-name")).to_have_text("Rina Wijaya")
    resp = page.goto(url + f"/members/{web.budi}")
    assert resp is not None and resp.status == 404
    assert "Budi" not in page.content()
    expect(page.locator(".error")).to_contain_text("Tidak ditemukan")
    assert [p for p in problems if "404" not in p] == []


def test_claim_flow_and_member_page_on_a_phone(served: tuple[Web, str], browser: Any, tmp_path: Path) -> None:
    web, url = served
    page, problems = _page(browser, 390, 844)
    page.goto(url + f"/k/{web.claim_token()}")
    stamps = web.guest.claim_stamps
    expect(page.locator("#claim-stamps")).to_have_text(f"{stamps} stempel dari struk ini")
    expect(page.locator("#claim-shop")).to_have_text("S1")
    shot = (SHOTS or tmp_path) / "claim.png"
    page.screenshot(path=str(shot), full_page=True)
    text = page.inner_text("body")
    assert "Klaim stempel" in text and "Kirim kode" in text and "2026-03-02" in text

    page.fill("input[name=phone]", "0857-1234-5678")
    page.click("#phone-form button")
    expect(page.locator("#code-sent")).to_contain_text("+6285712345678")
    code = [c for to, c in web.sender.sent if to == "+6285712345678"][-1]
    page.fill("input[name=code]", code)
    page.click("#code-form button")
    expect(page.locator("#claimed")).to_contain_text(f"{stamps} stempel")
    expect(page.locator("#me-balance")).to_have_text(f"{stamps} stempel")
    expect(page.locator(".qrbox svg")).to_be_visible()
    page.screenshot(path=str((SHOTS or tmp_path) / "card.png"), full_page=True)

    page.check("#consent input[name=email]")
    page.click("#consent button")
    expect(page.locator("#consent input[name=email]")).to_be_checked()
    assert problems == []
