"""What one sale costs the till, in CPU time and in pages written, against another checkout.

    python benchmarks/sale_cost.py --base /path/to/other/checkout [--rounds 5] [--sales 3000]

Runs `bench_sales.py`'s 3,000 sales through `parse_sale` + `Service.record_sale` in one process,
alternately with this checkout's code and the other's (each in a fresh interpreter, chosen by
PYTHONPATH), so a shared, noisy machine disturbs both alike. CPU is `time.process_time` with
`synchronous=OFF` (the fsync is the disk's, not the code's); the figure is the sum over chunks
of 100 sales of each chunk's fastest run. Pages are the WAL frames each sale's commit appends
(checkpoints off), the direct measure of what its fsync has to write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHUNK = 100


def worker(n_sales: int, n_members: int, mode: str) -> dict[str, object]:
    """Record the sales in this interpreter; CPU per chunk or WAL frames per sale."""
    sys.path.insert(0, str(HERE))
    from bench_sales import make_sales

    from tillstamp.agent.till import init_till, open_till
    from tillstamp.cli.base import EXAMPLE_PROGRAM
    from tillstamp.loyalty.sale import parse_sale

    now = dt.datetime(2026, 11, 5, 12, 0, tzinfo=dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "till"
        init_till(data, store="BENCH", terminal="T1", program=EXAMPLE_PROGRAM)
        with open_till(data, clock=lambda: now) as till:
            members = [till.service.enroll(f"0812{i:08d}").id for i in range(n_members)]
            sales = make_sales(n_sales, members, random.Random(7))
            conn = till.store.conn
            if mode == "cpu":
                conn.execute("PRAGMA synchronous=OFF")
                chunks = []
                for i in range(0, n_sales, CHUNK):
                    start = time.process_time()
                    for s in sales[i:i + CHUNK]:
                        till.service.record_sale(parse_sale(s, now=now))
                    chunks.append(time.process_time() - start)
                return {"chunks": chunks}
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            wal = Path(str(till.config.db_path) + "-wal")

            def frames() -> int:
                size = wal.stat().st_size if wal.exists() else 0
                return max(size - 32, 0) // (page + 24)

            member, guest = [], []
            for s in sales:
                before = frames()
                till.service.record_sale(parse_sale(s, now=now))
                (member if "member" in s else guest).append(frames() - before)
            return {"member": sum(member) / len(member), "guest": sum(guest) / len(guest)}


def run(code: Path, args: argparse.Namespace, mode: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--worker", mode, "--sales", str(args.sales),
                          "--members", str(args.members)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="the other checkout (the unchanged code)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sales", type=int, default=3000)
    ap.add_argument("--members", type=int, default=200)
    ap.add_argument("--worker", choices=("cpu", "pages"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.sales, args.members, args.worker)))
        return 0
    codes = {"this": HERE.parent}
    if args.base:
        codes["base"] = args.base.resolve()
    best: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, code in codes.items():
            chunks = run(code, args, "cpu")["chunks"]
            assert isinstance(chunks, list)
            prev = best.get(name)
            best[name] = chunks if prev is None else [min(a, b) for a, b in zip(prev, chunks, strict=True)]
    print(f"load average {os.getloadavg()[0]:.2f}, {args.rounds} rounds, {args.sales} sales\n")
    print("| code | CPU per sale | member sale, WAL frames | guest sale, WAL frames |")
    print("|---|---|---|---|")
    for name, code in codes.items():
        pages = run(code, args, "pages")
        print(f"| {name} ({code}) | {sum(best[name]) / args.sales * 1000:.3f} ms "
              f"| {pages['member']:.2f} | {pages['guest']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
