"""`hq import`'s two ways to write (docs/HQ.md, "Importing a shop's past"): in one transaction
with indexes and figures built once (a database holding fewer lines than the import), or chunk
by chunk. Both must store the same events and the same read model, equal to a rebuild, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.hq import importer, store_import
from tillstamp.hq.import_receipts import derived_ids
from tillstamp.hq.importer import FIELDS, PRODUCT_FIELDS, ImportOptions, parse_map, run_import
from tillstamp.hq.readmodel import MERGED
from tillstamp.hq.store import HqStore, open_hq_store
from tillstamp.hq.web import store_daily
from tillstamp.loyalty.events import Event, canonical, derived_id

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
MAP = "member=customer,receipt=basket,at=time,store=shop,sku=product,qty=units,amount=value"
# Text that JSON must escape, non-ASCII, and values that sort differently as bytes and as numbers.
ODD = ['P"1', "P\\2", "Kopi \u2603", "A\tB", "10", "9", "\u00e9clair", "x\ny"]


def q(store: HqStore, sql: str) -> list[tuple[Any, ...]]:
    with store._tx(write=False) as c:  # type: ignore[attr-defined]
        return list(store._x(c, sql).fetchall())  # type: ignore[attr-defined]


def random_rows(rng: random.Random, n: int, customers: int = 6) -> list[dict[str, Any]]:
    """Rows of a few stores, receipts spread over rows, guests, ties in every favourite."""
    out = []
    for i in range(n):
        basket = rng.randrange(n // 3 + 1)
        out.append({
            "customer": f"C{basket % customers}" if basket % 5 else "",
            "basket": f"B{basket}", "shop": rng.choice(["S1", "S2", "10", "9"]),
            "time": (dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=basket * 7 % 500,
                                                                            minutes=rng.choice([0, 0, 3]))).isoformat(),
            "product": rng.choice(ODD + ["P9", "P10"]), "units": rng.choice([0, 1, 2, -1]),
            "value": rng.choice(["1.00", "2.50", "0.00", "-1.25", "3.10"]),
        })
    # a receipt names one store: its rows take the store of its first row
    shops: dict[str, str] = {}
    for r in out:
        r["shop"] = shops.setdefault(r["basket"], r["shop"])
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["customer", "basket", "time", "shop", "product", "units", "value"])
        w.writeheader()
        w.writerows(rows)
    return path


def catalogue(tmp_path: Path) -> Path:
    import csv

    path = tmp_path / "products.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "dept"])
        for i, sku in enumerate(ODD):
            w.writerow([sku, f"name {sku}", ["DAIRY", "KOPI", "\u00c9PICERIE"][i % 3]])
        w.writerow([ODD[0], "second row of a SKU: ignored", "X"])
    return path


def opts(*files: Path, products: Path | None = None) -> ImportOptions:
    return ImportOptions(files=files, mapping=parse_map(MAP, FIELDS, "--map"), currency="USD", tz="America/New_York",
                         products=products, product_map=parse_map("sku=id,name=title,category=dept", PRODUCT_FIELDS,
                                                                  "--product-map") if products else {})


def snapshot(store: HqStore) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an import writes, in a stable order (gseq left out: a chunked import numbers the same)."""
    return {
        "events": q(store, "SELECT id, terminal, store, seq, kind, member, at, stamps, ref, body, digest FROM events "
                           "ORDER BY gseq"),
        "lines": q(store, "SELECT * FROM sale_lines ORDER BY sale, line"),
        "members": q(store, "SELECT * FROM crm_members ORDER BY member"),
        "days": q(store, "SELECT * FROM member_days ORDER BY member, day, store"),
    }


def is_pg(store: HqStore) -> bool:
    return type(store).__name__ == "PgHqStore"


def indexes(store: HqStore) -> list[tuple[Any, ...]]:
    """Every index and its definition, and on PostgreSQL every trigger of the lines and whether it is on."""
    if not is_pg(store):
        return q(store, "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
    return q(store, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                    "ORDER BY indexname") + q(
        store, "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'sale_lines'::regclass ORDER BY tgname")


def totals(store: HqStore) -> list[tuple[Any, ...]]:
    """The dashboard's daily totals, which the lines' insert trigger keeps (and a bulk import adds)."""
    store_daily.fold(store)  # SQLite adds new lines when the totals are read
    return q(store, "SELECT * FROM dash_days WHERE visits <> 0 OR sales <> 0 ORDER BY store, day, terminal")


@pytest.fixture(params=["sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A function giving the URL of a new empty HQ database, on each backend."""
    if request.param == "sqlite":
        names = iter(range(100))
        return lambda: f"sqlite:///{tmp_path / f'hq{next(names)}.db'}"
    server = request.getfixturevalue("pg_server")
    return lambda: str(server.url())


def test_one_transaction_and_chunks_store_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   new_url: Any) -> None:
    src = write_csv(tmp_path / "pos.csv", random_rows(random.Random(1), 300))
    products = catalogue(tmp_path)
    one = open_hq_store(new_url())
    many = open_hq_store(new_url())
    try:
        before = indexes(one)
        calls: list[int] = []
        real = store_import.write_bulk
        monkeypatch.setattr(store_import, "write_bulk", lambda *a, **k: calls.append(1) or real(*a, **k))
        got = run_import(one, opts(src, products=products), now=NOW)
        assert calls == [1]  # an empty database: one transaction
        assert indexes(one) == before  # every index dropped was built again, the same (and the trigger is on)
        if is_pg(one):  # ANALYZEd: the planner has statistics of the lines
            assert q(one, "SELECT count(*) FROM pg_stats WHERE tablename = 'sale_lines'")[0][0] > 0
        else:
            assert q(one, "PRAGMA journal_mode") == [("wal",)]  # a rollback journal only while it ran
        with monkeypatch.context() as m:
            m.setattr(store_import, "bulk_fits", lambda store, lines: False)
            m.setattr(importer, "CHUNK_LINES", 7)
            assert run_import(many, opts(src, products=products), now=NOW).to_dict() == got.to_dict()
        assert got.sales > 50 and got.members == 6
        assert snapshot(one) == snapshot(many)
        assert totals(one) == totals(many) and totals(one)  # the bulk's totals are the trigger's
        assert store_daily.check(one) == [] and store_daily.check(many) == []
        assert one.verify_crm().ok and many.verify_crm().ok
        for eid, terminal, store, seq, kind, member, at, stamps, ref, body, digest in snapshot(one)["events"]:
            assert body == canonical(json.loads(body)).decode()  # the bodies built from columns are canonical
            head = {"id": eid, "terminal": terminal, "store": store, "seq": seq, "kind": kind, "member": member,
                    "at": at, "stamps": stamps, "ref": ref}
            assert digest == hashlib.sha256(canonical(head) + b"\x1f" + body.encode()).hexdigest()
        again = run_import(one, opts(src, products=products), now=NOW)
        assert (again.new_sales, again.sales) == (0, got.sales)
        assert one.verify_crm().ok and store_daily.check(one) == []
    finally:
        one.close()
        many.close()


def test_a_bulk_import_over_some_of_its_own_receipts_stores_what_chunks_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_url: Any) -> None:
    """Receipts already held are left out of a chunk, and the numbers the helper thread guessed
    for the later chunks no longer hold: those are made again from the receipts really new."""
    rows = random_rows(random.Random(7), 300)
    part, whole = write_csv(tmp_path / "part.csv", rows[::9]), write_csv(tmp_path / "whole.csv", rows)
    monkeypatch.setattr(importer, "CHUNK_LINES", 40)
    one, many = open_hq_store(new_url()), open_hq_store(new_url())
    try:
        calls: list[int] = []
        real = store_import.write_bulk
        monkeypatch.setattr(store_import, "write_bulk", lambda *a, **k: calls.append(1) or real(*a, **k))
        for store in (one, many):
            with monkeypatch.context() as m:
                if store is many:
                    m.setattr(store_import, "bulk_fits", lambda store, lines: False)
                run_import(store, ImportOptions(**{**opts(part).__dict__, "source": "pos"}), now=NOW)
                got = run_import(store, ImportOptions(**{**opts(whole).__dict__, "source": "pos"}), now=NOW)
                assert 0 < got.new_sales < got.sales
        assert calls == [1, 1]  # both imports into `one` in one transaction
        assert snapshot(one) == snapshot(many)
        assert totals(one) == totals(many)
        assert one.verify_crm().ok and store_daily.check(one) == []
    finally:
        one.close()
        many.close()


def merge(store: HqStore, alias: str, survivor: str) -> None:
    """HQ records `alias` as one person with `survivor` (as `hq` does when two enrolments meet)."""
    merged = Event(derived_id("merge", alias, survivor), MERGED, NOW, alias, 0, None, {"into": survivor})
    with store._tx() as c:  # type: ignore[attr-defined]
        store._insert_hq_event(c, merged)  # type: ignore[attr-defined]
        store._crm_after_ingest(c, [], [merged], [])  # type: ignore[attr-defined]


@pytest.mark.parametrize("way", ["one", "chunks"])
def test_an_import_over_held_lines_and_a_merge_equals_a_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                way: str, new_url: Any) -> None:
    if way == "chunks":
        monkeypatch.setattr(store_import, "bulk_fits", lambda store, lines: False)
        monkeypatch.setattr(importer, "CHUNK_LINES", 7)
    store = open_hq_store(new_url())
    try:
        rng = random.Random(2)
        run_import(store, opts(write_csv(tmp_path / "old.csv", random_rows(rng, 30))), now=NOW)
        alias, survivor = (store.crm_member(external=x) for x in ("C1", "C2"))
        assert alias is not None and survivor is not None
        merge(store, alias["member"], survivor["member"])
        spend = survivor["spend"]
        got = run_import(store, opts(write_csv(tmp_path / "new.csv", random_rows(rng, 200))), now=NOW)
        assert got.new_sales > 0
        assert q(store, f"SELECT count(*) FROM sale_lines WHERE member = '{alias['member']}'") == [(0,)]
        after = store.crm_member(external="C2")
        assert after is not None and after["spend"] != spend
        assert store.verify_crm().ok and store_daily.check(store) == []
    finally:
        store.close()


def test_a_failure_inside_the_one_transaction_leaves_the_database_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_url: Any) -> None:
    store = open_hq_store(new_url())
    try:
        rng = random.Random(3)
        run_import(store, opts(write_csv(tmp_path / "old.csv", random_rows(rng, 20))), now=NOW)
        before, held, kept = snapshot(store), indexes(store), totals(store)

        def boom(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("power cut")

        # after every line is in, while the indexes are built again, before the figures are
        # written (on PostgreSQL the rollup's indexes are still dropped, the trigger off)
        with monkeypatch.context() as m:
            m.setattr(store_import.Visits, "figures", boom)
            with pytest.raises(RuntimeError, match="power cut"):
                run_import(store, opts(write_csv(tmp_path / "new.csv", random_rows(rng, 200))), now=NOW)
        after = snapshot(store)
        assert after["events"] == before["events"] and after["lines"] == before["lines"]
        assert after["days"] == before["days"] and totals(store) == kept
        assert indexes(store) == held
        assert store.verify_crm().ok
        assert run_import(store, opts(tmp_path / "new.csv"), now=NOW).new_sales > 0  # it can simply run again
        assert store.verify_crm().ok and store_daily.check(store) == [] and totals(store) != kept
    finally:
        store.close()



KILLED = """
import datetime as dt, os, signal, sys
from pathlib import Path
from tillstamp.hq import import_receipts
from tillstamp.hq.importer import FIELDS, ImportOptions, parse_map, run_import
from tillstamp.hq.store import open_hq_store

def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)  # every line written, the indexes being built, nothing committed

import_receipts.Visits.figures = die
store = open_hq_store(sys.argv[1])
run_import(store, ImportOptions(files=(Path(sys.argv[2]),), mapping=parse_map(sys.argv[3], FIELDS, "--map"),
                                currency="USD", tz="America/New_York"), now=dt.datetime.now(dt.UTC))
"""


def test_kill_9_inside_the_one_transaction_leaves_the_database_as_it_was(tmp_path: Path, new_url: Any) -> None:
    import signal
    import subprocess
    import sys

    url = new_url()
    store = open_hq_store(url)
    rng = random.Random(4)
    run_import(store, opts(write_csv(tmp_path / "old.csv", random_rows(rng, 20))), now=NOW)
    before, held, kept = snapshot(store), indexes(store), totals(store)
    store.close()
    new = write_csv(tmp_path / "new.csv", random_rows(rng, 300))
    proc = subprocess.run([sys.executable, "-c", KILLED, url, str(new), MAP], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # PostgreSQL rolls the transaction back when the killed client's connection closes; the
    # next statements on those tables wait for that (the lock is held until then)
    store = open_hq_store(url)
    try:
        after = snapshot(store)
        assert after["events"] == before["events"] and after["lines"] == before["lines"]
        assert after["days"] == before["days"] and totals(store) == kept
        # members are created first, in their own transaction: the new ones are there, without sales
        assert set(before["members"]) <= set(after["members"])
        assert all(row[17] == 0 for row in set(after["members"]) - set(before["members"]))  # visits
        assert indexes(store) == held
        if not is_pg(store):
            assert q(store, "PRAGMA journal_mode") == [("wal",)]
        assert store.verify_crm().ok
        assert run_import(store, opts(new), now=NOW).new_sales > 0  # and the import can simply run again
        assert store.verify_crm().ok and store_daily.check(store) == []
    finally:
        store.close()

ROW = st.fixed_dictionaries({
    "customer": st.sampled_from(["C1", "C2", "C3", ""]), "basket": st.integers(0, 12).map(str),
    "shop": st.sampled_from(["9", "10", "S"]), "hour": st.integers(0, 3), "day": st.integers(0, 2),
    "product": st.sampled_from(ODD[:4]), "units": st.integers(-1, 2), "value": st.sampled_from(["1", "2", "0"]),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=40))
def test_figures_from_the_import_equal_a_rebuild(tmp_path_factory: pytest.TempPathFactory,
                                                 rows: list[dict[str, Any]]) -> None:
    figures_equal_a_rebuild(tmp_path_factory, rows, "sqlite:///:memory:")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=40))
def test_figures_from_a_postgresql_bulk_import_equal_a_rebuild(tmp_path_factory: pytest.TempPathFactory,
                                                                pg_server: Any, rows: list[dict[str, Any]]) -> None:
    figures_equal_a_rebuild(tmp_path_factory, rows, str(pg_server.url()))


def figures_equal_a_rebuild(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], url: str) -> None:
    tmp = tmp_path_factory.mktemp("fig")
    owner: dict[str, str] = {}
    shop: dict[str, str] = {}
    for r in rows:  # one member and one store per receipt, as the rules require
        r["customer"] = owner.setdefault(r["basket"], r["customer"])
        r["shop"] = shop.setdefault(r["basket"], r["shop"])
        r["time"] = f"2026-01-0{1 + r.pop('day')}T{10 + r.pop('hour')}:00:00+00:00"
    products = catalogue(tmp)
    store = open_hq_store(url)
    try:
        run_import(store, opts(write_csv(tmp / "pos.csv", rows), products=products), now=NOW)
        report = store.verify_crm()
        assert report.ok, report.to_dict()
        assert store_daily.check(store) == []
    finally:
        store.close()


def test_ids_built_as_arrays_are_derived_ids() -> None:
    stores, receipts = ["S1", "9", "\u00e9"] * 50, [str(i) for i in range(150)]
    got = derived_ids(("import", "pos.csv"), stores, receipts).tolist()
    assert got == [derived_id("import", "pos.csv", s, r) for s, r in zip(stores, receipts, strict=True)]


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NY_SPRING = int((dt.datetime(2026, 3, 8, 7, tzinfo=dt.UTC) - EPOCH).total_seconds()) * 1_000_000


@settings(max_examples=60, deadline=None)
@given(zone=st.sampled_from(["America/New_York", "Asia/Jakarta", "Australia/Lord_Howe", "Asia/Kathmandu",
                             "Europe/Dublin", "UTC"]),
       times=st.lists(st.one_of(st.integers(-2 * 10**15, 4 * 10**15),
                                st.integers(NY_SPRING - 10**10, NY_SPRING + 10**10),
                                st.integers(-10**6, 10**6).map(lambda s: NY_SPRING + s * 1_000_000)),
                      min_size=1, max_size=50))
def test_local_times_as_arrays_are_the_read_models(zone: str, times: list[int]) -> None:
    from zoneinfo import ZoneInfo

    import numpy as np

    from tillstamp.hq.import_receipts import local_times
    from tillstamp.hq.readmodel import local_time

    text, date, day, hour, weekday = local_times(np.array(times, dtype=np.int64), ZoneInfo(zone))
    for i, us in enumerate(times):
        at = (EPOCH + dt.timedelta(microseconds=us)).isoformat()
        lt = local_time(at, zone)
        assert (text[i], date[i], int(day[i]), int(hour[i]), int(weekday[i])) == (
            at, lt.local_date, lt.day, lt.hour, lt.weekday)


def test_with_the_database_open_elsewhere_the_one_transaction_runs_in_wal(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    server, store = open_hq_store(url), open_hq_store(url)  # a running `hq serve`, and the import
    try:
        modes: list[str] = []
        real = store_import._bulk

        def spy(s: Any, c: Any, *a: Any) -> Any:
            modes.append(c.execute("PRAGMA journal_mode").fetchone()[0])
            return real(s, c, *a)

        monkeypatch.setattr(store_import, "_bulk", spy)
        got = run_import(store, opts(write_csv(tmp_path / "pos.csv", random_rows(random.Random(5), 100))), now=NOW)
        assert modes == ["wal"] and got.new_sales > 0
        assert q(server, "SELECT count(*) FROM events")[0][0] == got.sales  # the other connection sees it all
        assert store.verify_crm().ok
    finally:
        server.close()
        store.close()


def test_a_bad_value_parsed_once_is_reported_on_every_row_that_holds_it(tmp_path: Path) -> None:
    rows = random_rows(random.Random(6), 12)
    for i in (3, 7):
        rows[i]["value"] = "1.999"  # the same bad text twice: parsed once, reported twice
    rows[9]["time"] = "later"
    store = open_hq_store("sqlite:///:memory:")
    try:
        src = write_csv(tmp_path / "pos.csv", rows)
        with pytest.raises(importer.ImportRefused, match="3 bad row"):
            run_import(store, opts(src), now=NOW)
        assert q(store, "SELECT count(*) FROM events") == [(0,)]
        got = run_import(store, ImportOptions(**{**opts(src).__dict__, "skip_bad": True}), now=NOW)
        assert got.bad == ["pos.csv row 4: amount '1.999' has more decimals than the currency's 2",
                           "pos.csv row 8: amount '1.999' has more decimals than the currency's 2",
                           "pos.csv row 10: time 'later' is not an ISO 8601 time"]
        assert got.rows == 9 and store.verify_crm().ok
    finally:
        store.close()


def test_copy_text_is_read_back_as_written(pg_server: Any) -> None:
    """Every value PostgreSQL's COPY text format must escape, NULLs, numbers and shared values."""
    import psycopg
    import pyarrow as pa

    from tillstamp.hq.store_import_pg import copy_text

    texts = ["plain", "back\\slash", "tab\there", "line\nfeed", "carriage\rreturn", "\\N", "", None,
             "\u00e9\u2603 \"quoted\"", "\\t literally"]
    numbers = list(range(-3, len(texts) - 3))
    shared = ["r\\1", None, "r\t2"]  # a receipt's values repeated on its lines: a dictionary array
    picks = [i % 3 for i in range(len(texts))]
    columns = [pa.chunked_array([pa.array(texts[:4], pa.large_string()), pa.array(texts[4:], pa.large_string())]),
               pa.array(numbers, pa.int64()), "shared\tvalue", None, 7,
               pa.DictionaryArray.from_arrays(pa.array(picks, pa.int64()), pa.array(shared, pa.string()))]
    with psycopg.connect(str(pg_server.url()), autocommit=True) as conn:
        conn.execute("CREATE TABLE t (a TEXT, n BIGINT, s TEXT, z TEXT, k INTEGER, d TEXT)")
        with conn.cursor() as c, c.copy("COPY t (a, n, s, z, k, d) FROM STDIN") as copy:
            copy.write(copy_text(columns, len(texts)))
        got = conn.execute("SELECT a, n, s, z, k, d FROM t ORDER BY n").fetchall()
    assert got == [(t, n, "shared\tvalue", None, 7, shared[p])
                   for t, n, p in zip(texts, numbers, picks, strict=True)]
    assert bytes(copy_text(columns, 0)) == b""
    assert bytes(copy_text(["a\tb", None, 1], 2)) == b"a\\tb\t\\N\t1\n" * 2  # no array: every row the same


def test_a_push_during_a_postgresql_bulk_import_waits_for_it_then_lands(tmp_path: Path, pg_server: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The bulk import holds `events`, `sale_lines` and `member_days` exclusively until it
    commits: a till's push waits for it (no deadlock), then lands with its lines and totals."""
    import threading

    from tillstamp.hq.service import Hq

    from .conftest import Clock, program_source
    from .test_crm_read_model import push, sale_event
    from .test_hq_contract import enrol

    url = str(pg_server.url())
    hq = Hq(open_hq_store(url), clock=Clock())
    hq.publish_program(program_source())
    till = enrol(hq, "S1")
    importing = open_hq_store(url)
    inside, go_on = threading.Event(), threading.Event()
    real = store_import.Visits.figures

    def paused(self: Any, members: Any) -> Any:  # every line written, nothing committed
        inside.set()
        go_on.wait(120)  # a bound, so that a broken test ends
        return real(self, members)

    monkeypatch.setattr(store_import.Visits, "figures", paused)
    done: dict[str, Any] = {}
    src = write_csv(tmp_path / "pos.csv", random_rows(random.Random(8), 120))
    importer_thread = threading.Thread(target=lambda: done.update(got=run_import(importing, opts(src), now=NOW)))
    pusher = threading.Thread(target=lambda: done.update(pushed=push(
        hq, till, 1, [sale_event("R1", None, [("KOPI", 1, 20000, "COFFEE")])])))
    tables = "('events', 'sale_lines', 'member_days')"
    try:
        importer_thread.start()
        assert inside.wait(120)
        held = q(hq.store, "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                           f"WHERE l.mode = 'AccessExclusiveLock' AND l.granted AND c.relname IN {tables}")
        assert sorted(r[0] for r in held) == ["events", "member_days", "sale_lines"]
        pusher.start()
        waiting = f"SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE NOT l.granted " \
                  f"AND c.relname IN {tables}"
        for _ in range(2400):  # until PostgreSQL shows the push waiting for the import's lock
            if q(hq.store, waiting)[0][0]:
                break
            threading.Event().wait(0.05)
        assert q(hq.store, waiting)[0][0] > 0 and "pushed" not in done
    finally:
        go_on.set()
        importer_thread.join()
        pusher.join()
    try:
        assert done["got"].new_sales > 0 and done["pushed"] == 2
        assert q(hq.store, f"SELECT count(*) FROM sale_lines WHERE terminal = '{till.id}'") == [(1,)]
        assert hq.store.verify_crm().ok and store_daily.check(hq.store) == []
    finally:
        importing.close()
        hq.store.close()
