"""The cashier panel at a busy counter, in a real headless Chromium: finding a member by phone
or a wedge scanner, the member box clearing between customers, confirming a redemption and its
slip, enrolment with the card, every message in the panel's language, the disconnected state,
refunds and reprints, and a layout that fits a 10-inch tablet and a phone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent.kit import Agent, make_till, running_agent, sale
from browser import ARGS, CHROMIUM, require_chromium

from tillstamp.drivers.escpos_decode import decode

require_chromium()

from playwright.sync_api import Browser, Page, expect, sync_playwright

TABLET = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    ctx = browser.new_context(viewport=TABLET)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    folder = Path(os.environ.get("TILLSTAMP_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


def _open(agent: Agent, page: Page, lang: str = "id") -> None:
    page.goto(f"{agent.url}/?lang={lang}")
    expect(page.locator("#conn")).to_have_class("pill on")


def _printed(agent: Agent, till_dir: Path) -> list[str]:
    assert agent.rt.flush_prints(10)
    return decode((till_dir / "receipts.bin").read_bytes()).text


def _member_with(agent: Agent, phone: str, name: str, coffees: int) -> str:
    m = agent.client.enroll(phone, name)["member"]
    agent.client.record_sale(sale(f"S-{phone[-4:]}", member=m, qty=coffees))
    return m


def test_search_by_phone_then_the_sale_clears_the_member_box(agent, page, tmp_path) -> None:
    m = _member_with(agent, "0812-1111-2222", "Sari", 4)
    _open(agent, page)
    expect(page.locator("#find-q")).to_be_focused()  # ready for a wedge scanner at once
    page.fill("#find-q", "+62 812 1111 2222")
    page.press("#find-q", "Enter")
    expect(page.locator("#member .name")).to_have_text("Sari")
    expect(page.locator("#result-text")).to_have_text("Sekarang dilayani: Sari")
    expect(page.locator("#find-q")).to_be_focused()

    # The POS records the sale for whoever the till identified: that is Sari.
    out = agent.client.record_sale(sale("R-NEXT", member="@scan"))
    assert out["member"] == m
    expect(page.locator("#served")).to_contain_text("Struk R-NEXT selesai untuk Sari")
    expect(page.locator("#member")).to_contain_text("Belum ada member untuk pelanggan ini")
    expect(page.locator("button.redeem")).to_have_count(0)  # the next customer cannot use hers
    _shot(page, tmp_path, "counter-cleared")


def test_a_wedge_scanner_types_the_card_into_the_focused_input(agent, page) -> None:
    m = agent.client.enroll("0812-3333-4444", "Budi")
    agent.client.record_sale(sale("X1"))  # the enrolment made Budi current; a sale clears him
    _open(agent, page)
    expect(page.locator("#member")).to_contain_text("Belum ada member")
    page.locator("#member h2").click()  # the focus wanders off...
    page.keyboard.type(m["card"] + "\n")  # ...and the scanner types anyway, ending with Enter
    expect(page.locator("#member .name")).to_have_text("Budi")
    expect(page.locator("#member")).to_contain_text("baru discan")
    page.click("button.clear")  # the cashier is done with him without a sale
    expect(page.locator("#result-text")).to_have_text("Pelanggan berikutnya belum dikenali.")
    expect(page.locator("#member .name")).to_have_count(0)
    assert agent.rt.last_scan.peek() is None  # and no "@scan" sale can land on him now


def test_an_idle_member_box_clears_itself(till_dir, page) -> None:
    with running_agent(till_dir, panel_ttl=3.0) as agent:
        _open(agent, page)
        agent.client.enroll("0812-5555-6666", "Dewi")  # she is current; then nobody acts
        expect(page.locator("#member .name")).to_have_text("Dewi")
        expect(page.locator("#member .name")).to_have_count(0, timeout=8000)
        expect(page.locator("#member")).to_contain_text("Belum ada member")


def test_redeem_asks_first_keeps_the_result_and_prints_a_slip(agent, till_dir, page, tmp_path) -> None:
    m = _member_with(agent, "0812-1111-2222", "Sari", 20)
    balance = agent.client.member(m)["balance"]
    _open(agent, page)
    page.fill("#find-q", "0812-1111-2222")
    page.press("#find-q", "Enter")
    expect(page.locator("#ready")).to_contain_text("hadiah siap ditukar")

    page.locator("button.redeem[data-reward=kopi-gratis]").click()
    expect(page.locator("#confirm-text")).to_have_text("Tukar Gratis 1 Es Kopi Susu untuk Sari? −10 stempel")
    _shot(page, tmp_path, "counter-confirm")
    page.click("#confirm-no")
    assert agent.client.member(m)["balance"] == balance  # "Batal" redeems nothing

    page.locator("button.redeem[data-reward=kopi-gratis]").click()
    page.click("#confirm-yes")
    expect(page.locator("#result-text")).to_contain_text(
        f"Gratis 1 Es Kopi Susu ditukar untuk Sari: −10 stempel, saldo {balance - 10}.")
    expect(page.locator("#result-text")).to_contain_text("Slip untuk barista dicetak.")
    agent.client.record_sale(sale("OTHER"))  # the live view redraws; the result stays
    expect(page.locator("#served")).to_contain_text("OTHER")
    expect(page.locator("#result")).to_be_visible()
    _shot(page, tmp_path, "counter-redeemed")
    page.click("#result-close")
    expect(page.locator("#result")).to_be_hidden()

    text = _printed(agent, till_dir)
    slip = text.index("TUKAR HADIAH")
    assert "Gratis 1 Es Kopi Susu" in text[slip:] and "Sari" in text[slip:]
    assert f"-10 stempel, saldo {balance - 10}" in text[slip:]


def test_enrol_shows_and_prints_the_card_and_makes_the_member_current(agent, till_dir, page,
                                                                      tmp_path) -> None:
    _open(agent, page)
    page.click("#enrol-open")
    page.fill("input[name=phone]", "0813-7777-8888")
    page.fill("input[name=name]", "Putri")
    page.click("#enrol-submit")
    expect(page.locator("#result-text")).to_contain_text("Putri terdaftar")
    expect(page.locator("#member .name")).to_have_text("Putri")
    card = page.locator("#card-img")
    expect(card).to_be_visible()
    page.wait_for_function("document.getElementById('card-img').naturalWidth > 300")
    _shot(page, tmp_path, "counter-enrolled")
    page.click("#print-card")
    expect(page.locator("#result-text")).to_contain_text("Kartu member dicetak.")
    member = agent.client.find_member("0813-7777-8888")
    printed = decode((till_dir / "receipts.bin").read_bytes()) if agent.rt.flush_prints(10) else None
    assert printed is not None and "KARTU MEMBER" in printed.text and "Putri" in printed.text
    assert any(q.startswith("TS1M") for q in printed.qr)
    # The next "@scan" sale is hers, not refused with no_scan.
    assert agent.client.record_sale(sale("R-PUTRI", member="@scan"))["member"] == member["member"]


def test_every_message_is_in_the_panels_language(agent, page) -> None:
    _open(agent, page)
    page.click("#enrol-open")
    page.fill("input[name=phone]", "12345")
    page.click("#enrol-submit")
    expect(page.locator("#enrol-msg")).to_have_text("Nomor HP tidak valid. Contoh: 0812 3456 7890.")
    page.click("#enrol-cancel")
    page.fill("#find-q", "0899-0000-1111")
    page.press("#find-q", "Enter")
    expect(page.locator("#result-text")).to_have_text("Member tidak ditemukan.")
    page.press("#find-q", "Enter")
    expect(page.locator("#result-text")).to_have_text("Ketik nomor HP atau ID member, atau scan QR.")

    _open(agent, page, "en")
    page.fill("#find-q", "0899-0000-1111")
    page.press("#find-q", "Enter")
    expect(page.locator("#result-text")).to_have_text("No such member.")


def test_a_stopped_agent_shows_disconnected_and_no_device_ready(till_dir, page, tmp_path) -> None:
    with running_agent(till_dir) as agent:
        agent.client.record_sale(sale("R1"))
        assert agent.rt.flush_prints(10)  # the file printer has printed: it reads "siap"
        _open(agent, page)
        expect(page.locator("#conn")).to_have_text("● terhubung")
        expect(page.locator(".devices")).to_contain_text("siap")
        agent.server.stop()
        expect(page.locator("#conn")).to_have_text("● agen tidak terhubung")
        expect(page.locator("#stale")).to_be_visible()
        expect(page.locator(".devices")).not_to_contain_text("siap")
        expect(page.locator(".devices")).to_contain_text("tidak diketahui")
        _shot(page, tmp_path, "counter-disconnected")


def test_refund_and_reprint_from_the_sales_list(agent, till_dir, page) -> None:
    m = _member_with(agent, "0812-1111-2222", "Sari", 4)
    assert agent.client.member(m)["balance"] == 5
    _open(agent, page)
    row = page.locator("tr[data-receipt='S-2222']")
    row.locator("button.reprint").click()
    expect(page.locator("#result-text")).to_have_text("Struk S-2222 dicetak ulang (SALINAN).")
    row.locator("button.refund").click()
    expect(page.locator("#confirm-text")).to_contain_text("Batalkan transaksi S-2222 (Rp 100.000)?")
    page.click("#confirm-yes")
    expect(page.locator("#result-text")).to_have_text("Transaksi S-2222 dibatalkan: 5 stempel ditarik.")
    expect(row).to_contain_text("refund")
    assert agent.client.member(m)["balance"] == 0
    text = _printed(agent, till_dir)
    assert text.count("*** SALINAN ***") == 2  # top and bottom of the reprint


@pytest.mark.parametrize(("name", "viewport"), [
    ("tablet-landscape", TABLET), ("tablet-portrait", {"width": 800, "height": 1280}),
    ("phone", {"width": 390, "height": 844})])
def test_the_layout_fits_a_tablet_and_a_phone(browser, till_dir, tmp_path, name, viewport) -> None:
    with running_agent(till_dir) as agent:
        m = _member_with(agent, "0812-1111-2222", "Sari Wulandari", 20)
        for n in range(6):
            agent.client.record_sale(sale(f"G{n}"))
        ctx = browser.new_context(viewport=viewport)
        page = ctx.new_page()
        try:
            _open(agent, page)
            page.fill("#find-q", m)
            page.press("#find-q", "Enter")
            expect(page.locator("#member .name")).to_have_text("Sari Wulandari")
            height = viewport["height"]
            for selector in ("#find-q", "#enrol-open", "#status", "#member .balance"):
                box = page.locator(selector).bounding_box()
                assert box is not None and box["y"] + box["height"] <= height, (name, selector)
                assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (name, selector)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            _shot(page, tmp_path, f"counter-{name}")
        finally:
            ctx.close()


def test_card_image_has_shop_name_and_id(agent, page) -> None:
    m = agent.client.enroll("0812-9999-0000", "Rina")
    r = page.request.get(f"{agent.url}/panel/card/{m['member']}.png")
    assert r.status == 200 and r.body()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.request.get(f"{agent.url}/panel/card/01NOSUCHMEMBER0000000000000.png").status == 404


@pytest.fixture
def till_dir(tmp_path: Path) -> Path:
    return make_till(tmp_path / "till")
