"""How much of a durable sale is the database and the disk, and how much is Python.

    python benchmarks/sale_floor.py [--rounds 4] [--sales 3000] [--members 200]

`bench_sales.py`'s sales are recorded once through `Service.record_sale`, with every statement
and its parameters captured per transaction. Each round then runs, one after the other on
fresh copies of the same till:

- the bare loop of `bench_sales.py` (one INSERT + COMMIT per sale, WAL, `synchronous=FULL`);
- the *floor*: the captured statements replayed with the till's own connection settings, one
  transaction per sale, with no Python between them (the statements' CPU, the pages each commit
  writes and their fsync: what any code that keeps the same ledger and projections must pay);
- `parse_sale` + `record_sale` in this process (the sale path without the CLI);
- `tillstamp sale record` on the JSON lines (what `bench_sales.py` measures).

Milliseconds per sale and each as a multiple of the bare loop of its round; "Python" is the sale
path's time above the floor. The floor's CPU is also given with `synchronous=OFF`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_sales import bare_loop, make_sales, through_cli, tillstamp

from tillstamp.agent.store import connect
from tillstamp.agent.till import open_till
from tillstamp.loyalty.sale import parse_sale

Op = tuple[str, str, Any]  # ("one" | "many", sql, parameters)


class Recorder:
    """The till's connection, recording each statement with its parameters."""

    def __init__(self, conn: Any):
        self.conn = conn
        self.ops: list[Op] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.ops.append(("one", sql, params))
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = [tuple(r) for r in rows]
        self.ops.append(("many", sql, rows))
        return self.conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def transactions(ops: list[Op]) -> list[list[Op]]:
    """The statements between each BEGIN and its COMMIT."""
    out: list[list[Op]] = []
    current: list[Op] | None = None
    for op in ops:
        if op[1].startswith("BEGIN"):
            current = []
        elif op[1] == "COMMIT" and current is not None:
            out.append(current)
            current = None
        elif current is not None:
            current.append(op)
    return out


def fresh(template: Path, where: Path) -> Path:
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(template, where)
    return where


def replay(db: Path, txs: list[list[Op]], synchronous: str) -> tuple[float, float]:
    """Wall and CPU ms per transaction for the captured statements, one transaction each."""
    conn = connect(db)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    wall, cpu = time.perf_counter(), time.process_time()
    for tx in txs:
        conn.execute("BEGIN IMMEDIATE")
        for kind, sql, params in tx:
            if kind == "one":
                conn.execute(sql, params).fetchall()
            else:
                conn.executemany(sql, params)
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    conn.close()
    return wall / len(txs) * 1000, cpu / len(txs) * 1000


def in_process(data: Path, sales: list[dict[str, Any]], capture: bool = False) -> tuple[float, list[Op]]:
    """Ms per sale through parse_sale + record_sale (and the statements, with `capture`)."""
    with open_till(data) as till:
        recorder = None
        if capture:
            recorder = Recorder(till.store.conn)
            till.store.conn = recorder  # type: ignore[assignment]
        start = time.perf_counter()
        for s in sales:
            till.service.record_sale(parse_sale(s, now=till.service.now()))
        took = time.perf_counter() - start
    return took / len(sales) * 1000, recorder.ops if recorder else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--sales", type=int, default=3000)
    ap.add_argument("--members", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=HERE.parent) as tmp:
        root = Path(tmp)
        template = root / "till0"
        tillstamp(template, "init", "--store", "BENCH", "--terminal", "T1", stdout=subprocess.DEVNULL)
        with open_till(template) as till:
            members = [till.service.enroll(f"0812{i:08d}").id for i in range(args.members)]
        sales = make_sales(args.sales, members, random.Random(7))
        sales_file = root / "sales.jsonl"
        sales_file.write_text("\n".join(json.dumps(s) for s in sales) + "\n")
        _, ops = in_process(fresh(template, root / "capture"), sales, capture=True)
        txs = transactions(ops)
        if len(txs) != len(sales):
            raise SystemExit(f"captured {len(txs)} transactions for {len(sales)} sales")
        rows = []
        for _ in range(args.rounds):
            bare_db = root / "bare.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{bare_db}{suffix}").unlink(missing_ok=True)
            bare = 1000 / bare_loop(bare_db, sales)
            floor, floor_cpu = replay(fresh(template, root / "floor") / "till.db", txs, "FULL")
            _, floor_cpu_off = replay(fresh(template, root / "floor") / "till.db", txs, "OFF")
            sale, _ = in_process(fresh(template, root / "sale"), sales)
            cli = 1000 / through_cli(fresh(template, root / "cli"), sales_file, len(sales))[0]
            rows.append((bare, floor, floor_cpu, floor_cpu_off, sale, cli, os.getloadavg()[0]))
    print(f"## The floor of a durable sale ({dt.date.today()}, {len(txs)} transactions, "
          f"{sum(map(len, txs)) / len(txs):.2f} statements each)\n")
    print("| round | load | bare loop | floor (CPU; CPU with OFF) | record_sale | sale record (CLI) "
          "| floor / bare | CLI / bare | Python above the floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (bare, floor, fcpu, foff, sale, cli, load) in enumerate(rows, 1):
        print(f"| {i} | {load:.2f} | {bare:.3f} ms | {floor:.3f} ms ({fcpu:.3f}; {foff:.3f}) | {sale:.3f} ms "
              f"| {cli:.3f} ms | {floor / bare:.2f}x | {cli / bare:.2f}x | {cli - floor:.3f} ms |")
    med = statistics.median
    print(f"\nmedians: floor / bare {med(r[1] / r[0] for r in rows):.2f}x, CLI / bare "
          f"{med(r[5] / r[0] for r in rows):.2f}x, Python above the floor {med(r[5] - r[1] for r in rows):.3f} ms; "
          f"within 3x needs the CLI under {med(3 * r[0] for r in rows):.3f} ms a sale")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
