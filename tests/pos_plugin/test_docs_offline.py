"""`/docs` on the agent and at head office works with no internet: a real Chromium whose every
request to anywhere but loopback is refused still draws Swagger UI from the package's assets."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from browser import ARGS, CHROMIUM, require_chromium
from sync.live import serve

from tillstamp.hq.app import create_app
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store

require_chromium()

from playwright.sync_api import Page, Route, expect, sync_playwright


@pytest.fixture
def offline_page() -> Iterator[tuple[Page, list[str]]]:
    """A page that can reach 127.0.0.1 only; the list collects every request it refused."""
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.route("**/*", only_loopback)
        yield page, refused
        browser.close()


def _docs_draw(page: Page, url: str, title: str) -> None:
    page.goto(url + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text(title, timeout=15000)
    expect(page.locator(".opblock").first).to_be_visible()


def test_agent_docs_offline(agent, offline_page) -> None:
    page, refused = offline_page
    _docs_draw(page, agent.url, "tillstamp POS API")
    assert refused == []  # nothing even tried to leave the machine
    assert page.request.get(agent.url + "/redoc").status == 404  # ReDoc would need a CDN


def test_hq_docs_offline(tmp_path, offline_page) -> None:
    page, refused = offline_page
    hq = Hq(open_hq_store(f"sqlite:///{tmp_path / 'hq.db'}"))
    try:
        with serve(create_app(hq)) as url:
            _docs_draw(page, url, "tillstamp HQ sync")
            assert page.request.get(url + "/docs-assets/..%2Fpackage.json").status == 404
    finally:
        hq.store.close()
    assert refused == []
