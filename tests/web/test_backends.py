"""What the web pages write and read, on SQLite and PostgreSQL alike: sessions, one-time codes,
a phone claim and the till's copy of it, consent events, and the overview's figures."""

from __future__ import annotations

from pathlib import Path

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


def test_the_overviews_daily_totals_follow_every_write_of_the_lines(any_web: Web) -> None:
    from sync.conftest import T0

    from tillstamp.hq.web import store_daily, store_web
    from tillstamp.loyalty.sale import parse_sale

    web = any_web
    store = web.h.hq.store

    def by_lines() -> dict[int, tuple[int, int, int]]:
        """The same figures summed from every line, the slow way the totals replace."""
        with store._tx(write=False) as c:
            rows = store._x(c, "SELECT day, count(DISTINCT sale), sum(amount), count(DISTINCT CASE WHEN member "
                               "IS NOT NULL THEN sale END) FROM sale_lines WHERE voided = 0 GROUP BY day").fetchall()
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}

    days = sorted(by_lines())
    assert store_daily.daily_sales(store, days[0], days[-1] + 1, None) == by_lines()
    assert sum(v[0] for v in by_lines().values()) == 6 and store_daily.check(store) == []
    # a two-line sale refunded in part, and a sale refunded whole (voided): lines updated in place
    svc = web.s1.service
    svc.record_sale(parse_sale({"receipt": "P1", "member": web.rina, "at": T0.isoformat(), "total": 55_000,
                                "lines": [{"sku": "KOPI", "name": "Kopi", "qty": 2, "price": 20_000},
                                          {"sku": "ROTI", "name": "Roti", "qty": 1, "price": 15_000}]}, now=T0))
    svc.refund("P1", {"KOPI": 1})
    svc.refund("A1")
    web.s1.client.push()
    want = by_lines()
    assert sum(v[0] for v in want.values()) == 6 and sum(v[1] for v in want.values()) == 365_000 - 60_000 + 35_000
    assert store_daily.daily_sales(store, days[0], days[-1] + 1, None) == want and store_daily.check(store) == []
    assert store_daily.daily_sales(store, days[0], days[-1] + 1, "S2") == {days[0]: (1, 80_000, 1)}
    page = store_web.daily(store, days[0], days[-1] + 1, None)
    assert [(p["visits"], p["sales"], p["member_visits"]) for p in page] == [want[d] for d in days]
    # `hq rebuild` swaps the read model in by rewriting the lines: the totals stay right
    store.rebuild_crm()
    assert store_daily.check(store) == [] and store_daily.daily_sales(store, days[0], days[-1] + 1, None) == want
    # a total that drifted is found (hq verify) and recomputed (hq rebuild)
    with store._tx() as c:
        store._x(c, "UPDATE dash_days SET sales = sales + 1 WHERE store = 'S2'")
    bad = store_daily.check(store)
    assert len(bad) == 1 and bad[0]["store"] == "S2" and bad[0]["kept"][2] == bad[0]["lines"][2] + 1
    assert store_daily.rebuild(store) >= 2 and store_daily.check(store) == []
    # the newest line deleted behind the totals' back (only a rebuild deletes lines): PostgreSQL's
    # trigger subtracts it, SQLite's fold sees its rowids go back and counts everything again
    sqlite = type(store).__name__ != "PgHqStore"
    with store._tx() as c:
        store._x(c, "DELETE FROM sale_lines WHERE " + ("rowid = (SELECT max(rowid) FROM sale_lines)" if sqlite
                                                        else "sale = (SELECT max(sale) FROM sale_lines)"))
    assert store_daily.check(store) == []


def test_hq_verify_finds_a_drifted_daily_total_and_hq_rebuild_recomputes_it(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    from sync.conftest import Clock, program_source
    from sync.test_crm_read_model import push, sale_event
    from sync.test_hq_contract import enrol

    from tillstamp.hq.service import Hq
    from tillstamp.hq.store import open_hq_store

    url = f"sqlite:///{tmp_path / 'hq.db'}"
    hq = Hq(open_hq_store(url), clock=Clock())
    hq.publish_program(program_source())
    push(hq, enrol(hq, "S1"), 1, [sale_event("R1", "M1", [("KOPI", 2, 20000, None)])])
    from tillstamp.hq.web import store_daily

    assert store_daily.fold(hq.store) == 1  # SQLite folds new lines in when the totals are read
    with hq.store._tx() as c:  # type: ignore[attr-defined]
        hq.store._x(c, "UPDATE dash_days SET visits = 5")  # type: ignore[attr-defined]
    hq.store.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tillstamp", "hq", *args, "--db", url, "--json"],
                              check=False, capture_output=True, text=True, timeout=120)

    bad = cli("verify")
    assert bad.returncode == 1, bad.stderr
    diff = json.loads(bad.stdout)["daily_total_diffs"][0]
    assert (diff["store"], diff["kept"], diff["lines"]) == ("S1", [5, 1, 40000], [1, 1, 40000])
    assert cli("rebuild").returncode == 0
    ok = cli("verify")
    assert (ok.returncode, json.loads(ok.stdout)["ok"], json.loads(ok.stdout)["daily_total_diffs"]) == (0, True, [])
