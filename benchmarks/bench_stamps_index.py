"""What the segment previews' indexes cost HQ ingest on PostgreSQL: stamp events by time on
`events` (`events_stamps_by_at`, which the dashboard's stamp totals read too),
`member_days_member` and `crm_members_pop`. (The expiring leaf reads earnings by member from
`events_by_member`, which every read of a member's events needs, so it stays in both runs.)

`bench_ingest_hook.run` (batches of 10,000 `stamps.earned` events over 2,000 members through
`Hq.push_raw`, the read model's hook on, a fresh database each run) with the indexes and
without them, alternating in one process. Every event of this workload earns stamps, so every
one adds an entry to `events_stamps_by_at`: the worst case there (it has no sales, so `member_days` is
not written; every batch updates the 2,000 members' rows). Prints the seconds of each run and the median ratio.

    python benchmarks/bench_stamps_index.py [--repeat 3] [--batches 5]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ingest_hook import run
from sync.pgserver import PgServer

from tillstamp.hq import store_pg

INDEXES = ("events_stamps_by_at", "member_days_member", "crm_members_pop")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batches", type=int, default=5)
    args = ap.parse_args()
    with_index = store_pg.SCHEMA
    without = tuple(sql for sql in with_index if not any(f" {name} " in sql for name in INDEXES))
    assert len(without) == len(with_index) - len(INDEXES), "the indexes are not in the schema"
    server = PgServer()
    parts: collections.Counter[str] = collections.Counter()
    out: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(args.repeat):
            for indexed in (False, True):
                store_pg.SCHEMA = with_index if indexed else without
                out[indexed].append(run(server.url(), True, parts, args.batches))
    finally:
        store_pg.SCHEMA = with_index
        server.stop()
    ratios = [a / b for a, b in zip(out[True], out[False], strict=True)]
    print(f"without the indexes: {', '.join(f'{x:.2f}' for x in out[False])} s")
    print(f"with the indexes:    {', '.join(f'{x:.2f}' for x in out[True])} s")
    print(f"with / without, median of the runs' ratios: {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
