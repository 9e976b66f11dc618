"""Fixtures for the web pages: an HQ with tills that really sold and synced, staff users with
passwords, and a client that logs in through /login like a browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sync.conftest import T0, Clock, HqHarness, sale

from tillstamp.hq.crm import Crm
from tillstamp.hq.web import store_web
from tillstamp.hq.web.auth import hash_password

PASSWORD = "kopi-senja-2026"
XSS = "<script>alert(1)</script>"


class Web:
    """An HQ harness with two stores' tills, members and sales pushed, and staff users."""

    def __init__(self, h: HqHarness, root: Path):
        self.h = h
        self.crm = Crm(h.hq)
        self.s1 = h.till(root, "t1", "S1")
        self.s2 = h.till(root, "t2", "S2")
        svc1, svc2 = self.s1.service, self.s2.service
        self.rina = svc1.enroll("0812-1111-2222", "Rina Wijaya", consent=["whatsapp"]).id
        self.evil = svc1.enroll("0812-3333-4444", XSS).id
        self.budi = svc2.enroll("0813-5555-6666", "Budi").id
        for i in range(3):
            svc1.record_sale(sale(f"A{i}", self.rina, 60_000))
        svc1.record_sale(sale("A9", self.evil, 30_000))
        svc2.record_sale(sale("B1", self.budi, 80_000))
        self.guest = svc1.record_sale(sale("G1", None, 75_000))
        for t in (self.s1, self.s2):
            t.client.push()
        h.clock.advance(hours=18)  # 04:00 the next day in Jakarta: segments count whole days before today
        for name, role in (("owner", "owner"), ("maya", "marketer"), ("mgr1", "manager:S1")):
            self.crm.add_user(name, role)
            store_web.set_password(h.hq.store, name, hash_password(PASSWORD), h.clock())

    @property
    def sender(self) -> Any:
        return self.h.app.state.customer.sender

    def client(self, https: bool = False) -> TestClient:
        return TestClient(self.h.app, base_url="https://hq.test" if https else "http://hq.test")

    def login(self, name: str = "owner", password: str = PASSWORD) -> TestClient:
        c = self.client()
        r = c.post("/login", data={"csrf": pre_token(c), "name": name, "password": password, "next": "/"},
                   follow_redirects=False)
        assert r.status_code == 303, r.text
        return c

    def claim_token(self) -> str:
        payload = self.guest.claim
        assert payload is not None
        return payload[payload.upper().index("TS1C"):]


def pre_token(c: TestClient, path: str = "/login") -> str:
    """The form token a page without a session hands out (and its cookie)."""
    return csrf_of(c.get(path).text)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no csrf field in the page"
    return m.group(1)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    h = HqHarness("sqlite:///:memory:", Clock(T0))
    h.publish()
    w = Web(h, tmp_path)
    yield w
    h.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_web(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Web]:
    """The same HQ with tills on both backends (a fresh PostgreSQL database each time)."""
    if request.param == "sqlite":
        url = "sqlite:///:memory:"
    else:
        url = str(request.getfixturevalue("pg_server").url())
    h = HqHarness(url, Clock(T0))
    h.publish()
    w = Web(h, tmp_path)
    yield w
    h.close()
