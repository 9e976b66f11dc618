"""The store: durable pragmas, append-only ledger, hash chain, rebuildable projections."""

from __future__ import annotations

import itertools
import sqlite3

import pytest
from support import sale_dict

from tillstamp.agent import ledger
from tillstamp.agent.store import open_store
from tillstamp.loyalty.sale import parse_sale


def fill(service):
    m = service.enroll("081234567890", "Budi")
    for i in range(5):
        service.record_sale(parse_sale(sale_dict(f"R-{i}", member=m.id), now=service.now()))
    service.refund("R-1", {"KOPI-SUSU": 1})
    service.redeem(m.id, "pastry-gratis")
    return m


def test_file_store_is_wal_with_full_sync(tmp_path):
    store = open_store(tmp_path / "till.db")
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_migrations_are_named_and_idempotent(tmp_path):
    open_store(tmp_path / "a.db").close()
    store = open_store(tmp_path / "a.db")
    names = [r[0] for r in store.conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    assert names == ["m001_ledger", "m002_members", "m003_projections", "m004_fewer_pages_per_sale",
                     "m005_member_keyed_ids"]


def test_ledger_refuses_updates_and_deletes(service):
    fill(service)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        service.store.conn.execute("UPDATE ledger SET stamps = 100 WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        service.store.conn.execute("DELETE FROM ledger WHERE seq = 2")


def test_verify_finds_a_tampered_row(service):
    fill(service)
    assert ledger.verify(service.store).ok
    conn = service.store.conn
    conn.execute("DROP TRIGGER ledger_no_update")
    conn.execute("UPDATE ledger SET stamps = stamps + 10 WHERE kind = 'stamps.earned' AND seq = 3")
    report = ledger.verify(service.store)
    assert not report.ok
    assert any("hash does not match" in p for p in report.problems)
    assert any("projected balance" in p for p in report.problems)


def test_rebuilt_projections_equal_live_ones(service):
    fill(service)
    live = service.store.projection_snapshot()
    assert ledger.rebuild_matches(service.store)
    assert ledger.rebuild(service.store) is True
    assert service.store.projection_snapshot() == live
    # Corrupt a projection: verify notices, rebuild repairs.
    service.store.conn.execute("UPDATE balances SET balance = 999")
    assert not ledger.verify(service.store).ok
    assert ledger.rebuild(service.store) is False
    assert service.store.projection_snapshot() == live


def test_outbox_is_a_read_position_over_the_ledger(service):
    fill(service)
    events = service.store.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.seq for e in service.store.events(after_seq=5, limit=3)] == [6, 7, 8]
    # Member PII travels beside the events that changed it.
    assert [m.name for m in service.store.members_changed(0, 1)] == ["Budi"]
    assert service.store.members_changed(1, 99) == []


def test_a_failed_write_rolls_back_everything(service):
    fill(service)
    before = service.store.count_events(), service.store.last_seq
    with pytest.raises(RuntimeError), service.store.write():
        service.store.conn.execute(
            "INSERT INTO meta(key, value) VALUES ('x', 'y')"
        )
        raise RuntimeError("power cut")
    assert (service.store.count_events(), service.store.last_seq) == before
    assert service.store.get_meta("x") is None


def test_m004_keeps_every_projection_row(tmp_path):
    import sqlite3 as sq

    from sqlite_utils import Database

    from tillstamp.agent.store import migrations

    path = tmp_path / "old.db"
    conn = sq.connect(path, isolation_level=None)
    migrations.apply(Database(conn), stop_before="m004_fewer_pages_per_sale")
    conn.execute("INSERT INTO balances(member, balance, earned, visits) VALUES ('M1', 7, 9, 2)")
    conn.execute("INSERT INTO sales(key, receipt, member, seq, at, total, digest) "
                 "VALUES ('S/R-1', 'R-1', 'M1', 2, '2026-11-23T02:00:00+00:00', 50000, 'd')")
    conn.execute("INSERT INTO claims(token, member, seq) VALUES ('t', 'M1', 5)")
    before = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("balances", "sales", "claims")}
    conn.close()
    store = open_store(path)
    after = {t: store.conn.execute(f"SELECT * FROM {t}").fetchall() for t in ("balances", "sales", "claims")}
    assert after == before
    assert store.conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'ledger_ref'").fetchone()[0] == 0
    store.close()


def test_m005_keeps_the_ledger_and_its_guards(tmp_path, service):
    import sqlite3 as sq

    from sqlite_utils import Database

    from tillstamp.agent.store import migrations

    fill(service)
    rows = service.store.conn.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
    path = tmp_path / "old.db"
    conn = sq.connect(path, isolation_level=None)
    migrations.apply(Database(conn), stop_before="m005_member_keyed_ids")
    conn.executemany(f"INSERT INTO ledger VALUES ({', '.join('?' * len(rows[0]))})", rows)
    conn.execute("INSERT INTO meta(key, value) VALUES ('store', 'JKT-01')")
    conn.close()
    store = open_store(path)
    assert store.conn.execute("SELECT * FROM ledger ORDER BY seq").fetchall() == rows
    ledger.rebuild(store)
    assert ledger.verify(store).ok
    assert store.projection_snapshot() == service.store.projection_snapshot()
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'ledger'")}
    assert names == {"ledger", "ledger_member_id", "ledger_guest_id", "ledger_no_update", "ledger_no_delete"}
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute("DELETE FROM ledger WHERE seq = 2")
    assert [r.key for r in store.sales_by_receipt("R-1")] == ["JKT-01/R-1"]
    store.close()


def test_an_event_id_is_unique_per_member_and_among_guest_events(fresh_store):
    import datetime as dt

    from tillstamp.loyalty import events as ev
    from tillstamp.loyalty.events import Event

    at = dt.datetime(2026, 11, 23, 2, tzinfo=dt.UTC)
    member, guest = ev.new_id(), ev.new_id()
    with fresh_store.write():
        fresh_store.append([Event(member, ev.ADJUSTED, at, "M1", 5, None, {"reason": "x"}),
                            Event(guest, ev.REFUNDED, at, None, 0, "S/R", {"amount": 1})], terminal="T1", store="S")
    for again in (Event(member, ev.ADJUSTED, at, "M1", 1, None, {"reason": "y"}),
                  Event(guest, ev.REFUNDED, at, None, 0, "S/R", {"amount": 2})):
        with pytest.raises(sqlite3.IntegrityError), fresh_store.write():
            fresh_store.append([again], terminal="T1", store="S")
    assert fresh_store.count_events() == 2
    assert fresh_store.has_event(member, "M1") and not fresh_store.has_event(member, "M2")
    assert fresh_store.has_event(guest, None) and not fresh_store.has_event(member, None)


def test_sales_are_found_by_receipt_with_and_without_a_business_day(fresh_store, program, keys, clock):
    from tillstamp.agent.service import Service

    fresh_store.set_meta("store", "JKT-01")
    plain = Service(fresh_store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock)
    daily = Service(fresh_store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock,
                    daily_receipts=True)
    plain.record_sale(parse_sale(sale_dict("R-1"), now=clock()))
    daily.record_sale(parse_sale(sale_dict("R-1"), now=clock()))
    daily.record_sale(parse_sale(sale_dict("2026-11-23/R-1"), now=clock()))
    keys_found = [r.key for r in fresh_store.sales_by_receipt("R-1")]
    assert keys_found == ["JKT-01/R-1", "JKT-01/2026-11-23/R-1"]
    assert [r.key for r in fresh_store.sales_by_receipt("2026-11-23/R-1")] == ["JKT-01/2026-11-23/2026-11-23/R-1"]
    assert plain.find_sale("R-1", "2026-11-23").key == "JKT-01/2026-11-23/R-1"
    # Neither lookup reads the whole table: the usual key by the primary key, a daily one by
    # the partial index.
    plan = fresh_store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM sales WHERE key = ? AND receipt = ? UNION ALL "
        "SELECT * FROM sales WHERE receipt = ? AND key <> substr(key, 1, instr(key, '/')) || receipt",
        ["JKT-01/R-1", "R-1", "R-1"]).fetchall()
    assert not [p for p in plan if "SCAN" in p[3]], plan


def test_a_member_sale_commits_few_pages(tmp_path, program, keys, clock):
    """The WAL frames a sale's commit appends are the pages its fsync writes (docs/AGENT.md)."""
    from tillstamp.agent.service import Service

    store = open_store(tmp_path / "till.db")
    store.conn.execute("PRAGMA wal_autocheckpoint=0")
    svc = Service(store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock)
    members = [svc.enroll(f"0812{i:08d}").id for i in range(40)]
    wal = tmp_path / "till.db-wal"
    page = store.conn.execute("PRAGMA page_size").fetchone()[0]
    frames = {True: [], False: []}
    for i in range(200):
        member = members[i % 40] if i % 3 else None
        before = wal.stat().st_size
        svc.record_sale(parse_sale(sale_dict(f"R-{i}", member=member), now=clock()))
        frames[member is not None].append((wal.stat().st_size - before) // (page + 24))
    store.close()
    # Before m005 a member's sale wrote 9-10 pages and a guest's 6-7.
    assert sum(frames[True]) / len(frames[True]) <= 7
    assert sum(frames[False]) / len(frames[False]) <= 5


def test_the_wal_is_written_again_from_its_start_after_about_a_thousand_pages(tmp_path, program, keys, clock):
    """Commits that grow the WAL file wait on the file system's journal as well (docs/AGENT.md
    "The sale loop"), so the WAL stops growing at about 1,000 pages and is written over again."""
    from tillstamp.agent.service import Service

    store = open_store(tmp_path / "till.db")
    store.conn.execute("PRAGMA synchronous=OFF")  # the WAL's size does not depend on the fsync
    svc = Service(store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock)
    members = [svc.enroll(f"0812{i:08d}").id for i in range(40)]
    wal = tmp_path / "till.db-wal"
    page = store.conn.execute("PRAGMA page_size").fetchone()[0]
    sizes = []
    for i in range(500):  # about 2,500 pages written
        member = members[i % 40] if i % 3 else None
        svc.record_sale(parse_sale(sale_dict(f"R-{i}", member=member), now=clock()))
        sizes.append(wal.stat().st_size)
    store.close()
    grew = sum(b > a for a, b in itertools.pairwise(sizes))
    assert max(sizes) <= 32 + 1020 * (page + 24)  # 1,000 pages and the commit that crossed them
    assert grew < 250, grew  # the rest were written over frames already on disk
