"""The cashier panel shows head office's hints and the offer that applies (headless Chromium).

Real parts: an HQ on SQLite served over loopback HTTP, a till enrolled with it that pushes its
sales and pulls the tags after `refresh_tags`, then the agent on that till folder serving the
panel (its sync loop talking to the same HQ)."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent.kit import running_agent, sale_time
from browser import ARGS, CHROMIUM, require_chromium
from support import EXAMPLE_PROGRAM
from sync.live import serve

from tillstamp.agent.enroll import init_with_hq
from tillstamp.agent.sync_store import client_for
from tillstamp.agent.till import open_till
from tillstamp.drivers.events import ScanEvent, utc_now
from tillstamp.hq.app import create_app
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.tags import refresh_tags
from tillstamp.loyalty import events as ev
from tillstamp.loyalty import tokens
from tillstamp.loyalty.sale import Sale, parse_sale

require_chromium()

from playwright.sync_api import expect, sync_playwright

JAKARTA = dt.timezone(dt.timedelta(hours=7))


def croissant(receipt: str, member: str, at: dt.datetime) -> Sale:
    return parse_sale({"receipt": receipt, "member": member, "at": at.isoformat(), "total": 50000,
                       "lines": [{"sku": "CROISSANT", "name": "Croissant", "qty": 2, "price": 25000}]}, now=at)


@pytest.fixture
def tagged_till(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A till enrolled with HQ (served on loopback HTTP) whose member last came 39 days ago, has
    a birthday in two days and usually buys croissants; HQ refreshed the tags and the till
    pulled them. HQ stays up while the test runs, so the agent's own sync loop reaches it."""
    hq = Hq(open_hq_store("sqlite:///:memory:"))
    hq.publish_program(tomllib.loads(EXAMPLE_PROGRAM.read_text(encoding="utf-8")))
    with serve(create_app(hq)) as url:
        data = tmp_path / "till"
        init_with_hq(data, hq=url, code=hq.new_code("JKT-01"))
        now = dt.datetime.now(dt.UTC)
        birthday = (now.astimezone(JAKARTA).date() + dt.timedelta(days=2)).replace(year=1990)
        clock = [now - dt.timedelta(days=41)]  # she enrolled 41 days ago (segments count members enrolled before D)
        with open_till(data, clock=lambda: clock[0]) as till:
            assert till.sync is not None
            m = till.service.enroll("081255550000", name="Sari", birthday=birthday.isoformat())
            till.service.record_sale(croissant("C1", m.id, now - dt.timedelta(days=40)))
            till.service.record_sale(croissant("C2", m.id, now - dt.timedelta(days=39)))
            clock[0] = now
            client = client_for(till.store, till.keys, till.sync, url)
            client.push()
            refresh_tags(hq)
            client.pull()
            assert "lapsed-30" in till.sync.tagging(m.id).tags  # type: ignore[union-attr]
        yield data, m.id, tokens.sign_member(hq.signing_key(), m.id, now)
    hq.store.close()


def test_panel_shows_hints_and_the_offer_then_the_sale_gets_it(tagged_till: tuple[Path, str, str]) -> None:
    data, member, card = tagged_till
    with running_agent(data) as agent, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(agent.url + "/")
        agent.rt.on_scan(ScanEvent(card, "camera://0", utc_now()))
        expect(page.locator("#member .name")).to_have_text("Sari")
        hints = page.locator("#hints")
        expect(hints).to_contain_text("Ulang tahun minggu ini")
        expect(hints).to_contain_text("Biasanya: Croissant")
        expect(hints).to_contain_text("Lama tidak datang: 39 hari")
        expect(page.locator("#offers")).to_contain_text("Penawaran: Kangen kamu! Stempel 2x")

        # The sale gives the offer (its stamps doubled), and the panel stops offering it.
        before = int(page.locator("#member .balance .big").inner_text())
        result = agent.client.record_sale({"receipt": "P1", "member": "@scan", "at": sale_time().isoformat(),
                                           "total": 50000, "lines": [{"sku": "KOPI", "name": "Kopi", "qty": 2,
                                                                      "price": 25000}]})
        events = agent.rt.writer.call(lambda: agent.rt.till.service.member_events(member))
        [earn] = [e for e in events if e.kind == ev.EARNED and e.ref == "JKT-01/P1" and not e.body.get("offer")]
        [offer] = [e for e in events if e.kind == ev.EARNED and e.body.get("offer") == "balik-lagi"]
        assert offer.stamps == earn.stamps > 0 and result["stamps_awarded"] == 2 * earn.stamps
        agent.rt.on_scan(ScanEvent(card, "camera://0", utc_now()))
        expect(page.locator("#member .balance .big")).to_have_text(str(before + 2 * earn.stamps))
        expect(page.locator("#offers")).to_have_count(0)
        expect(page.locator("#hints")).not_to_contain_text("Lama tidak datang")  # they just came

        page.goto(agent.url + "/?lang=en")
        expect(page.locator("#hints")).to_contain_text("Birthday this week")
        browser.close()
