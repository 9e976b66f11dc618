"""`hq import`: a shop's past receipts from CSV, JSON lines and Parquet, on every backend."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tillstamp.hq.importer import ImportOptions, ImportRefused, run_import, sale_id
from tillstamp.hq.store import HqStore, open_hq_store

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
HEADER = "customer,basket,time,shop,product,units,value\n"
# A receipt's lines spread over rows (B1), a guest (B2), quantity 0 and a product missing
# from the catalogue (B3), a time without an offset (B2), cents (USD).
ROWS = [
    "C1,B1,2026-01-05T10:00:00-05:00,NY1,P1,2,3.98",
    ",B2,2026-01-05 12:00:00,NY1,P2,1,1.50",
    "C2,B3,2026-01-06T09:00:00Z,NY2,P1,0,0.00",
    "C1,B1,2026-01-05T10:02:00-05:00,NY1,P3,1,12.10",
    "C2,B3,2026-01-06T09:00:00Z,NY2,P9,1,0.99",
]
MAP = "member=customer,receipt=basket,at=time,store=shop,sku=product,qty=units,amount=value"


@pytest.fixture
def store(hq_url: str) -> Iterator[HqStore]:
    s = open_hq_store(hq_url)
    yield s
    s.close()


def write_csv(path: Path, rows: list[str] = ROWS) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def catalogue(tmp_path: Path) -> Path:
    path = tmp_path / "products.csv"
    path.write_text("id,title,dept\nP1,Milk,DAIRY\nP2,Bread,BAKERY\nP3,Coffee beans,COFFEE\n", encoding="utf-8")
    return path


def opts(*files: Path, **kw: Any) -> ImportOptions:
    from tillstamp.hq.importer import FIELDS, parse_map

    base: dict[str, Any] = {"mapping": parse_map(MAP, FIELDS, "--map"), "currency": "USD", "tz": "America/New_York"}
    base.update(kw)
    return ImportOptions(files=files, **base)


def q(store: HqStore, sql: str) -> list[tuple[Any, ...]]:
    with store._tx(write=False) as c:  # type: ignore[attr-defined]
        return list(store._x(c, sql).fetchall())  # type: ignore[attr-defined]


def counts(store: HqStore) -> tuple[int, int, int]:
    return (q(store, "SELECT count(*) FROM events")[0][0], q(store, "SELECT count(*) FROM sale_lines")[0][0],
            q(store, "SELECT count(*) FROM crm_members")[0][0])


def test_import_keeps_every_fact_and_a_second_run_adds_nothing(store: HqStore, tmp_path: Path) -> None:
    from tillstamp.hq.importer import PRODUCT_FIELDS, parse_map

    src = write_csv(tmp_path / "pos.csv")
    o = opts(src, products=catalogue(tmp_path), product_map=parse_map("sku=id,name=title,category=dept",
                                                                       PRODUCT_FIELDS, "--product-map"))
    first = run_import(store, o, now=NOW)
    assert first.to_dict() | {"bad": []} == {"rows": 5, "sales": 3, "new_sales": 3, "members": 2, "new_members": 2,
                                              "skipped": 0, "bad": []}
    lines = q(store, "SELECT receipt, line, store, terminal, sku, name, category, qty, amount, local_date, "
                     "local_hour, member IS NULL FROM sale_lines ORDER BY receipt, line")
    assert lines == [
        ("B1", 0, "NY1", "IMPORT", "P1", "Milk", "DAIRY", 2, 398, "2026-01-05", 10, 0),
        ("B1", 1, "NY1", "IMPORT", "P3", "Coffee beans", "COFFEE", 1, 1210, "2026-01-05", 10, 0),
        ("B2", 0, "NY1", "IMPORT", "P2", "Bread", "BAKERY", 1, 150, "2026-01-05", 7, 1),  # naive = UTC
        ("B3", 0, "NY2", "IMPORT", "P1", "Milk", "DAIRY", 0, 0, "2026-01-06", 4, 0),  # quantity 0 kept
        ("B3", 1, "NY2", "IMPORT", "P9", None, None, 1, 99, "2026-01-06", 4, 0),  # not in the catalogue: kept
    ]
    c1 = store.crm_member(external="C1")
    assert c1 is not None and (c1["visits"], c1["spend"], c1["store"], c1["fav_category"]) == (1, 1608, "NY1", "COFFEE")
    body = json.loads(q(store, f"SELECT body FROM events WHERE id = '{sale_id('pos.csv', 'NY1', 'B1')}'")[0][0])
    assert body["total"] == 1608 and body["lines"][1]["at"] == "2026-01-05T15:02:00+00:00"
    before = counts(store)
    again = run_import(store, o, now=NOW)
    assert (again.new_sales, again.new_members, again.sales) == (0, 0, 3)
    assert counts(store) == before
    assert store.verify_crm().ok


def test_parquet_and_json_lines_read_the_same_receipts(store: HqStore, tmp_path: Path) -> None:
    table = pa.table({"customer": [1, None, 2], "basket": [10, 11, 12], "shop": [7, 7, 8],
                      "time": pa.array([dt.datetime(2026, 1, 5, 15, 0)] * 3, pa.timestamp("ns")),
                      "product": [100, 101, 100], "units": [1, 2, 1], "value": [2.99, 0.1 + 0.2, 1.776e-15]})
    pq.write_table(table, tmp_path / "tx.parquet")
    got = run_import(store, opts(tmp_path / "tx.parquet", naive_as_local=True), now=NOW)
    assert (got.rows, got.sales, got.members) == (3, 3, 2)
    assert q(store, "SELECT receipt, store, sku, amount, local_hour, at_utc FROM sale_lines ORDER BY receipt") == [
        ("10", "7", "100", 299, 15, "2026-01-05T20:00:00+00:00"),  # naive read in New York time
        ("11", "7", "101", 30, 15, "2026-01-05T20:00:00+00:00"),  # a binary float rounds to the cent
        ("12", "8", "100", 0, 15, "2026-01-05T20:00:00+00:00"),
    ]
    (tmp_path / "tx.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"customer": "1", "basket": "20", "shop": "7", "time": "2026-01-07T08:00:00+07:00", "product": "100",
         "units": 3, "value": "5.25"}]) + "\n", encoding="utf-8")
    got = run_import(store, opts(tmp_path / "tx.jsonl"), now=NOW)
    assert (got.new_sales, got.new_members) == (1, 0)  # customer 1 is the same member
    assert q(store, "SELECT qty, amount FROM sale_lines WHERE receipt = '20'") == [(3, 525)]
    c1 = store.crm_member(external="1")
    assert c1 is not None and c1["visits"] == 2


@pytest.mark.parametrize(("rows", "kw", "message"), [
    (ROWS[:1] + ["C1,B9,2026-01-05T10:00:00Z,NY1,P1,1,1.999"], {}, "pos.csv row 2: amount '1.999' has more decimals"),
    (ROWS[:1] + ["C1,B9,yesterday,NY1,P1,1,1.00"], {}, "row 2: time 'yesterday' is not an ISO 8601 time"),
    (ROWS[:1] + ["C1,B9,2026-01-05T10:00:00Z,NY1,P1,1.5,1.00"], {}, "row 2: qty '1.5' is not a whole number"),
    (ROWS[:1] + ["C1,,2026-01-05T10:00:00Z,NY1,P1,1,1.00"], {}, "row 2: no receipt"),
    (ROWS[:1] + ["C9,B1,2026-01-05T10:00:00Z,NY1,P1,1,1.00"], {}, "receipt B1 of store NY1 names members C1, C9"),
    (ROWS, {"currency": "XYZ"}, "--currency: unknown currency 'XYZ'"),
    (ROWS, {"tz": "Mars/Olympus"}, "--tz: unknown time zone"),
    (ROWS, {"mapping": {"receipt": "nope"}}, "--map receipt=nope: no such column"),
    (ROWS, {"mapping": {}}, "receipt (no column 'receipt'; give --map receipt=COLUMN)"),
])
def test_bad_files_and_maps_are_refused_and_nothing_is_written(store: HqStore, tmp_path: Path, rows: list[str],
                                                               kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ImportRefused, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_import(store, opts(write_csv(tmp_path / "pos.csv", rows), **kw), now=NOW)
    assert counts(store) == (0, 0, 0)
    assert q(store, "SELECT count(*) FROM members")[0][0] == 0


def test_skip_bad_imports_the_rest_and_reports_the_rows(store: HqStore, tmp_path: Path) -> None:
    src = write_csv(tmp_path / "pos.csv", [*ROWS, "C3,B7,2026-01-05T10:00:00Z,NY1,P1,1,oops"])
    got = run_import(store, opts(src, skip_bad=True), now=NOW)
    assert (got.rows, got.sales, got.skipped) == (5, 3, 1)
    assert got.bad == ["pos.csv row 6: amount 'oops' is not a number"]


def test_the_command_line_prints_counts_and_exits_2_on_a_bad_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    src = write_csv(tmp_path / "pos.csv")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tillstamp", "hq", "import", *args, "--db", url, "--json",
                               "--map", MAP, "--currency", "USD", "--tz", "America/New_York"],
                              check=False, capture_output=True, text=True, timeout=120)

    ok = cli(str(src))
    assert ok.returncode == 0, ok.stderr
    assert {k: v for k, v in json.loads(ok.stdout).items() if k in ("rows", "sales", "new_sales", "members")} == {
        "rows": 5, "sales": 3, "new_sales": 3, "members": 2}
    assert json.loads(cli(str(src)).stdout)["new_sales"] == 0
    bad = cli(str(write_csv(tmp_path / "bad.csv", ["C1,B1,2026-01-05T10:00:00Z,NY1,P1,x,1.00"])))
    assert bad.returncode == 2 and "bad.csv row 1: qty 'x' is not a whole number" in bad.stderr
    assert bad.stdout == ""
