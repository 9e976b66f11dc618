"""`tillstamp hq segment ...` and `hq user add` as an operator runs them."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from segments import crmdata
from tillstamp.cli import main
from tillstamp.hq import crm_store
from tillstamp.hq.segments import Facts, LineFacts, MemberFacts
from tillstamp.hq.staff import token_hash
from tillstamp.hq.store import open_hq_store

D = crmdata.BASE_DAY
AS_OF = crmdata.BASE.isoformat()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    store = open_hq_store(url)
    crmdata.load(store, Facts(
        members=[MemberFacts("M1", "S1", D - 300, consent=frozenset({"whatsapp"})), MemberFacts("M2", "S2", D - 300)],
        lines=[LineFacts("R1", "M1", "S1", D - 40, "KOPI", "COFFEE", 1, 25_000),
               LineFacts("R2", "M1", "S1", D - 35, "KOPI", "COFFEE", 1, 25_000),
               LineFacts("R3", "M2", "S2", D - 2, "KOPI", "COFFEE", 1, 25_000)]))
    store.close()
    return url


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_save_show_export_and_sizes(db: str, capsys: Any, tmp_path: Path) -> None:
    example = str(Path(__file__).resolve().parents[2] / "examples" / "segments" / "lapsed-coffee.toml")
    code, out, _ = run(capsys, "hq", "segment", "preview", example, "--db", db, "--as-of", AS_OF, "--json")
    assert code == 0 and json.loads(out) == {"count": 1, "as_of": AS_OF, "sample": [
        {"member": "M1", "external_id": "X-M1", "name": "Member M1", "phone": "+628120000000", "store": "S1",
         "tier": None, "balance": 0}]}
    assert run(capsys, "hq", "segment", "save", example, "--db", db)[0] == 0
    code, out, _ = run(capsys, "hq", "segment", "show", "lapsed-coffee", "--db", db, "--json")
    assert code == 0 and json.loads(out)["definition"]["all"][2] == {"consent": "whatsapp"}
    target = tmp_path / "out.csv"
    code, _, _err = run(capsys, "hq", "segment", "export", "lapsed-coffee", "--csv", "--out", str(target),
                       "--as-of", AS_OF, "--db", db)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert code == 0 and [r["member"] for r in rows] == ["M1"] and rows[0]["consent_whatsapp"] == "1"
    code, out, _ = run(capsys, "hq", "segment", "preview", "lapsed-30", "--as-of", "2026-02-01", "--db", db, "--json")
    assert code == 0 and json.loads(out)["count"] == 0  # M1's last visit was then 7 days before
    code, out, _ = run(capsys, "hq", "segment", "sizes", "--as-of", AS_OF, "--db", db, "--json")
    sizes = json.loads(out)
    assert sizes["lapsed-coffee"] == 1 and sizes["lapsed-30"] == 1 and sizes["rfm-new"] == 1
    store = open_hq_store(db)
    try:
        assert crm_store.audit_log(store)[0]["action"] == "segment.export"
        assert crm_store.sizes(store, "lapsed-30") == [{"day": "2026-02-01", "size": 0}, {"day": AS_OF, "size": 1}]
    finally:
        store.close()


def test_bad_definitions_exit_2_with_the_path_and_write_nothing(db: str, capsys: Any, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[any]]\nvisits = { min = 2, within_days = "90" }\n')
    for action in ("preview", "save"):
        code, out, err = run(capsys, "hq", "segment", action, str(bad), "--db", db)
        assert code == 2 and out == ""
        assert err.strip() == "tillstamp: any[0].visits.within_days: expected a whole number, got '90'"
    monkeypatch.setattr("sys.stdin", io.StringIO('{"all": [{"last_visit_days": {"min": 9, "max": 3}}]'))
    code, _, err = run(capsys, "hq", "segment", "preview", "-", "--db", db)
    assert code == 2 and "not valid JSON" in err
    code, _, err = run(capsys, "hq", "segment", "save", str(tmp_path / "missing.toml"), "--db", db)
    assert code == 2 and "no such segment file" in err
    renamed = tmp_path / "predef.json"
    renamed.write_text('{"name": "lapsed-30", "visits": {"min": 1}}')
    code, _, err = run(capsys, "hq", "segment", "save", str(renamed), "--db", db)
    assert code == 2 and "predefined" in err
    store = open_hq_store(db)
    try:
        assert crm_store.list_segments(store) == [] and crm_store.sizes(store, "x") == []
    finally:
        store.close()


def test_user_add_prints_a_token_once_and_stores_only_its_hash(db: str, capsys: Any) -> None:
    code, out, _ = run(capsys, "hq", "user", "add", "budi", "--role", "manager:JKT-01", "--db", db, "--json")
    got = json.loads(out)
    assert code == 0 and (got["role"], got["store"]) == ("manager", "JKT-01") and got["token"].startswith("tsk_")
    store = open_hq_store(db)
    try:
        stored = store.conn.execute("SELECT token_hash FROM staff_users").fetchall()  # type: ignore[attr-defined]
        assert stored == [(token_hash(got["token"]),)] and got["token"] not in stored[0][0]
        assert crm_store.user_by_token_hash(store, token_hash(got["token"])).role == "manager"
    finally:
        store.close()
    assert run(capsys, "hq", "user", "add", "budi", "--role", "owner", "--db", db)[0] == 2  # name taken
    code, _, err = run(capsys, "hq", "user", "add", "ana", "--role", "boss", "--db", db)
    assert code == 2 and "owner, marketer or manager:STORE" in err
