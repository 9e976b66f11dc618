"""The cashier panel in a real headless Chromium: live updates from the event stream, the
enrol form, the Redeem button and the language switch."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from agent.kit import sale
from browser import ARGS, CHROMIUM, require_chromium

from tillstamp.drivers.events import ScanEvent, utc_now

require_chromium()

from playwright.sync_api import expect, sync_playwright


@pytest.fixture
def page():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 900})
        yield pg
        browser.close()


def test_panel_follows_scans_enrols_and_redeems(agent, page, tmp_path: Path) -> None:
    page.goto(agent.url + "/")
    expect(page.locator("h2").first).to_contain_text("Member")
    expect(page.locator("#member")).to_contain_text("Belum ada member")
    expect(page.locator("#conn")).to_have_class("pill on")

    # Enrol from the panel: the new member appears through the event stream.
    page.click("#enrol-open")
    page.fill("input[name=phone]", "0812-1111-2222")
    page.fill("input[name=name]", "Rina Wijaya")
    page.check("input[value=whatsapp]")
    page.click("#enrol button[type=submit]")
    expect(page.locator("#result-text")).to_contain_text("Rina Wijaya terdaftar")
    expect(page.locator("#member .name")).to_have_text("Rina Wijaya")
    member = agent.client.find_member("0812-1111-2222")
    assert member["consent"]["whatsapp"] is True

    # Sales give her stamps; a scan of her card marks her as just scanned.
    for n in range(3):
        agent.client.record_sale(sale(f"B{n}", member=member["member"], qty=4))
    card = agent.client.enroll("0813-9999-0000", "Other")["card"]  # someone else is shown now
    expect(page.locator("#member .name")).to_have_text("Other")
    rina_card = agent.rt.writer.call(lambda: agent.rt.till.service.member_card(member["member"]))
    agent.rt.on_scan(ScanEvent(rina_card, "camera://0", utc_now()))
    expect(page.locator("#member .name")).to_have_text("Rina Wijaya")
    expect(page.locator("#member")).to_contain_text("baru discan")
    expect(page.locator("#member .card")).to_contain_text("/10")
    expect(page.locator(".sales")).to_contain_text("Rp 100.000")
    expect(page.locator(".missions")).to_contain_text("Rp 300.000 / Rp 500.000")  # spend, in Rupiah
    expect(page.locator(".devices")).to_contain_text("tidak dipasang")  # device states speak Indonesian
    expect(page.locator(".devices")).not_to_contain_text("open")
    assert card

    # Redeem a reward with the button; the balance drops by its cost.
    before = agent.client.member(member["member"])["balance"]
    page.locator("button.redeem[data-reward=kopi-gratis]").click()
    page.click("#confirm-yes")
    expect(page.locator("#member .balance .big")).to_have_text(str(before - 10))
    page.screenshot(path=str(tmp_path / "panel-id.png"), full_page=True)

    # English switch.
    page.click("nav.lang >> text=EN")
    expect(page.locator("#member")).to_contain_text("just scanned")
    expect(page.locator("#enrol-open")).to_have_text("+ Enrol a new member")
    expect(page.locator(".devices")).to_contain_text("not fitted")
    shots = os.environ.get("TILLSTAMP_SCREENSHOTS")
    page.screenshot(path=str(Path(shots) / "panel-en.png") if shots else str(tmp_path / "panel-en.png"),
                    full_page=True)
    if shots:
        page.goto(agent.url + "/?lang=id")
        page.screenshot(path=str(Path(shots) / "panel-id.png"), full_page=True)


def test_panel_offers_a_scanned_receipt_claim(agent, page) -> None:
    guest = agent.client.record_sale(sale("G1"))
    m = agent.client.enroll("0812-5555-6666", "Dewi")
    page.goto(agent.url + "/")
    # The scan is only pushed to pages already listening: wait until the event stream is open.
    expect(page.locator("#conn")).to_have_class(re.compile(r"\bon\b"))
    agent.rt.on_scan(ScanEvent(guest["claim"], "serial:///dev/pts/9", utc_now()))
    expect(page.locator("#claim-offer")).to_contain_text("G1")
    page.locator("button.claim-btn").click()
    expect(page.locator("#claim-offer")).to_have_count(0)
    assert agent.client.member(m["member"])["balance"] == 3
