"""After `hq erase`, the member's name, phone, email and birthday are in no file on disk, at
head office or at the tills, write-ahead logs included; their stamps stay visible everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from tillstamp.cli import main

from .conftest import Clock, HqHarness, sale

NAME = "Wulandari Kusumawati"
PHONE_DIGITS = b"81299887766"  # in E.164 (+6281299887766) and as typed (081299887766)
EMAIL = "wulan.kusuma@contoh.id"
BIRTHDAY = "1990-07-14"
SECRETS = (NAME.encode(), PHONE_DIGITS, EMAIL.encode(), BIRTHDAY.encode())


@pytest.fixture
def file_hq(clock: Clock, tmp_path: Path):
    h = HqHarness(f"sqlite:///{tmp_path / 'hq.db'}", clock)
    h.publish()
    yield h
    h.close()


def _files(*dbs: Path) -> list[Path]:
    return [f for db in dbs for f in (db, Path(f"{db}-wal")) if f.exists()]


def _leaks(files: list[Path]) -> list[tuple[str, bytes]]:
    return [(f.name, s) for f in files for s in SECRETS if s in f.read_bytes()]


def test_erased_pii_is_in_no_database_file_and_balances_stay(file_hq: HqHarness, tmp_path: Path,
                                                             capsys) -> None:
    a = file_hq.till(tmp_path, "a", "S1")
    b = file_hq.till(tmp_path, "b", "S2")
    m = a.service.enroll("0812-9988-7766", NAME, EMAIL, BIRTHDAY, ["email"])
    a.service.record_sale(sale("A1", m.id))
    a.client.push()
    b.client.pull()
    assert b.till.store.member(m.id).name == NAME  # type: ignore[union-attr]
    b.service.record_sale(sale("B1", m.id))
    b.client.push()
    a.client.pull()
    before_a, before_b = a.service.view(m.id).balance, b.service.view(m.id).balance
    assert before_a == before_b > 0
    dbs = (tmp_path / "hq.db", a.data / "till.db", b.data / "till.db")
    assert _leaks(_files(*dbs))  # the check can see PII where it is

    assert main(["hq", "erase", m.id, "--db", f"sqlite:///{tmp_path / 'hq.db'}"]) == 0
    capsys.readouterr()
    assert Path(f"{tmp_path / 'hq.db'}-wal").stat().st_size == 0  # checkpointed and truncated
    a.client.pull()
    b.client.pull()

    assert _leaks(_files(*dbs)) == []
    # Stamps are not personal data: each till still counts the other's.
    assert a.service.view(m.id).balance == before_a and b.service.view(m.id).balance == before_b
    # ... and keeps counting them after the erasure, without the PII coming back.
    b.service.record_sale(sale("B2", m.id))
    b.client.push()
    a.client.pull()
    assert a.service.view(m.id).balance > before_a
    assert a.till.store.member(m.id).name is None  # type: ignore[union-attr]
    assert _leaks(_files(*dbs)) == []


def test_secure_delete_is_set_explicitly_on_both_ends(tmp_path: Path) -> None:
    # This machine's SQLite may default to it; the stores must not rely on that.
    from tillstamp.agent.store import open_store
    from tillstamp.hq.store_sqlite import SqliteHqStore

    till = open_store(tmp_path / "till.db")
    hq = SqliteHqStore(str(tmp_path / "hq.db"))
    try:
        assert till.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
        assert hq.conn.execute("PRAGMA secure_delete").fetchone()[0] == 1
    finally:
        till.close()
        hq.close()
