"""Durable sales per second through `tillstamp sale record` (JSON lines, one transaction
each) against a bare sqlite3 loop committing one insert per sale with the same pragmas,
in the same run; p50/p99 latency per sale from the gaps between result lines.

    python benchmarks/bench_sales.py [--sales N] [--members M]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tillstamp.agent.till import open_till

TARGET_RATIO = 3.0
TARGET_P99_MS = 10.0


def bare_loop(path: Path, sales: list[dict]) -> float:
    """Commits/s for one INSERT + COMMIT per sale with WAL and synchronous=FULL."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE sales (receipt TEXT PRIMARY KEY, body TEXT NOT NULL)")
    start = time.perf_counter()
    for s in sales:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO sales VALUES (?, ?)", (s["receipt"], json.dumps(s)))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(sales) / elapsed


def tillstamp(data: Path, *argv: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "TILLSTAMP_HOME": str(data)}
    return subprocess.run([sys.executable, "-m", "tillstamp", *argv], env=env, check=True, **kw)


def through_cli(data: Path, sales_file: Path, n: int) -> tuple[float, list[float]]:
    """Sales/s and per-sale latencies (ms) of `tillstamp sale record` on JSON lines."""
    env = {**os.environ, "TILLSTAMP_HOME": str(data)}
    # Read through a buffer, as a POS would: unbuffered, each line was read a byte at a time
    # (a system call per byte, about 120 a sale) on the same two cores as the till.
    proc = subprocess.Popen([sys.executable, "-m", "tillstamp", "sale", "record", str(sales_file), "--json"],
                            env=env, stdout=subprocess.PIPE)
    stamps = []
    assert proc.stdout is not None
    for _line in proc.stdout:
        stamps.append(time.perf_counter())
    proc.wait()
    if proc.returncode != 0 or len(stamps) != n:
        raise SystemExit(f"sale record failed: exit {proc.returncode}, {len(stamps)}/{n} results")
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
    # The first result carries interpreter start-up; the rate counts from it onwards.
    return (n - 1) / (stamps[-1] - stamps[0]), gaps


def make_sales(n: int, members: list[str], rng: random.Random) -> list[dict]:
    menu = [("KOPI-SUSU-AREN", "coffee", 25000), ("LATTE", "coffee", 32000), ("CROISSANT", "pastry", 28000),
            ("GAYO-250", "biji-kopi", 95000), ("TEH-TARIK", "tea", 22000)]
    start = dt.datetime(2026, 11, 2, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    out = []
    for i in range(n):
        lines = []
        for sku, cat, price in rng.sample(menu, rng.randint(1, 3)):
            lines.append({"sku": sku, "name": sku.title(), "category": cat, "qty": rng.randint(1, 3), "price": price})
        sale = {"receipt": f"B-{i:06d}", "at": (start + dt.timedelta(minutes=i)).isoformat(), "lines": lines,
                "total": sum(ln["qty"] * ln["price"] for ln in lines)}
        if rng.random() < 0.7:
            sale["member"] = rng.choice(members)
        out.append(sale)
    return out


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] if len(values) > 2 else max(values)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sales", type=int, default=3000)
    ap.add_argument("--members", type=int, default=200)
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as tmp:
        root = Path(tmp)
        data = root / "till"
        tillstamp(data, "init", "--store", "BENCH", "--terminal", "T1", stdout=subprocess.DEVNULL)
        # Enrolling through the library is the same code as the CLI, without 200 start-ups.
        with open_till(data) as till:
            members = [till.service.enroll(f"0812{i:08d}").id for i in range(args.members)]
        sales = make_sales(args.sales, members, rng)
        sales_file = root / "sales.jsonl"
        sales_file.write_text("\n".join(json.dumps(s) for s in sales) + "\n")
        bare = bare_loop(root / "bare.db", sales)
        rate, gaps = through_cli(data, sales_file, args.sales)
    ratio = bare / rate
    p50, p99 = statistics.median(gaps), pct(gaps, 99)
    print(f"## Durable sales ({dt.date.today()}, {platform.machine()}, {os.cpu_count()} cores, {args.sales} sales)\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| bare sqlite3 loop, commits/s | {bare:,.0f} | baseline |")
    print(f"| `tillstamp sale record`, sales/s | {rate:,.0f} | |")
    print(f"| slowdown against the bare loop | {ratio:.2f}x | within {TARGET_RATIO:.0f}x |")
    print(f"| latency per sale p50 | {p50:.2f} ms | |")
    print(f"| latency per sale p99 | {p99:.2f} ms | under {TARGET_P99_MS:.0f} ms |")
    print(f"| load average (1/5/15 min) | {' / '.join(f'{x:.2f}' for x in os.getloadavg())} | |")
    ok = ratio <= TARGET_RATIO and p99 < TARGET_P99_MS
    print(f"\nverdict: {'meets' if ok else 'MISSES'} the targets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
