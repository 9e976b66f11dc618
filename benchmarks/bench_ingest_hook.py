"""What maintaining the CRM read model costs HQ ingest, in one process, on PostgreSQL.

The workload of `bench_sync.py` without the till and HTTP around it: batches of 10,000
`stamps.earned` events over 2,000 members, pushed through `Hq.push_raw` (the path the HTTP
app calls) into a fresh throwaway database each run, once as HQ runs and once with the read
model's hook (`_crm_after_ingest`) replaced by nothing, alternating. Prints the seconds of
each run, the median ratio, and where the hook's time went.

    python benchmarks/bench_ingest_hook.py [--repeat 3] [--batches 5]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from sync.pgserver import PgServer
from sync.test_hq_contract import batch, enrol

from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, new_id

T0 = dt.datetime(2026, 1, 5, 3, tzinfo=dt.UTC)
PARTS = ("_crm_after_ingest", "_crm_apply", "_crm_upsert_members", "_crm_tiers", "_crm_tiers_step", "_crm_figures",
         "_crm_days")


def timed(store: Any, name: str, into: collections.Counter[str]) -> None:
    """Wrap one method of this store object so its time adds up in `into`."""
    f = getattr(store, name, None)
    if f is None:  # a part older code does not have
        return

    def g(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            into[name] += time.perf_counter() - t
    setattr(store, name, g)


def run(url: str, hook: bool, parts: collections.Counter[str], batches: int, per: int = 10_000,
        members: int = 2_000) -> float:
    """Seconds spent in push_raw for `batches` batches into a fresh database."""
    store = open_hq_store(url)
    hq = Hq(store, clock=lambda: T0 + dt.timedelta(days=1))
    hq.publish_program(tomllib.loads((ROOT / "examples" / "program.toml").read_text(encoding="utf-8")))
    t = enrol(hq, "S1")
    if hook:
        for name in PARTS:
            timed(store, name, parts)
    else:
        store._crm_after_ingest = lambda *a, **k: None  # type: ignore[method-assign]
    ms = [new_id() for _ in range(members)]
    seq, total = 1, 0.0
    for b in range(batches):
        evs = [Event(new_id(), ev.EARNED, T0 + dt.timedelta(seconds=b * per + i), ms[i % members], 1 + i % 3, "r", {})
               for i in range(per)]
        raw = batch(t, seq, evs).model_dump_json().encode()
        start = time.perf_counter()
        hq.push_raw(t, raw, "application/json")
        total += time.perf_counter() - start
        seq += per
    store.close()
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batches", type=int, default=5)
    args = ap.parse_args()
    server = PgServer()
    parts: collections.Counter[str] = collections.Counter()
    try:
        out: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeat):
            for hook in (False, True):
                out[hook].append(run(server.url(), hook, parts, args.batches))
    finally:
        server.stop()
    ratios = [a / b for a, b in zip(out[True], out[False], strict=True)]
    print(f"without the read model: {', '.join(f'{x:.2f}' for x in out[False])} s")
    print(f"with the read model:    {', '.join(f'{x:.2f}' for x in out[True])} s")
    print(f"with / without, median of the runs' ratios: {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f})")
    print("hook parts, s in all runs: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
