"""Tag refresh for the tills (`hq tags refresh`) against measuring every segment's size
(`hq segment sizes`), in the same run on the same data.

Both evaluate every saved and predefined segment once as of D; the refresh also writes each
segment's members (`INSERT … SELECT`), walks every member in chunks for the hints (most-bought
SKU, reorders, tier measure) and writes the rows and feed entries of the members that changed.
The first refresh writes a row for nearly every member; the second, a day later, only the
members whose tags or hints changed. The ratio says what the tills' tags cost beyond the
segment counts head office already runs daily.

    python benchmarks/bench_tags.py [--members N] [--lines M] [--pg]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gen_crm import AS_OF, generate

from tillstamp.hq.crm import Crm
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.tags import refresh_tags


def run(url: str, members: int, lines: int) -> dict[str, float]:
    """Seconds for segment sizes, a first refresh, and a refresh a day later."""
    at = dt.datetime.combine(AS_OF, dt.time(3, 0), dt.UTC)
    clock = [at]
    hq = Hq(open_hq_store(url), clock=lambda: clock[0])
    hq.publish_program(tomllib.loads((ROOT / "examples" / "program.toml").read_text(encoding="utf-8")))
    t = time.perf_counter()
    generate(hq.store, members=members, lines=lines)
    print(f"generated {members:,} members, {lines:,} lines in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    out: dict[str, float] = {}
    t = time.perf_counter()
    Crm(hq).record_sizes(AS_OF)
    out["sizes"] = time.perf_counter() - t
    t = time.perf_counter()
    first = refresh_tags(hq, AS_OF)
    out["first"] = time.perf_counter() - t
    out["first_changed"] = first.changed
    clock[0] += dt.timedelta(days=1)
    t = time.perf_counter()
    second = refresh_tags(hq, AS_OF + dt.timedelta(days=1))
    out["next_day"] = time.perf_counter() - t
    out["next_changed"] = second.changed
    out["members"] = first.members
    hq.store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=50_000)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL instead of a SQLite file")
    args = ap.parse_args()
    if args.pg:
        from sync.pgserver import PgServer

        server = PgServer()
        try:
            r = run(server.url(), args.members, args.lines)
        finally:
            server.stop()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(f"sqlite:///{tmp}/hq.db", args.members, args.lines)
    print(f"| {'PostgreSQL' if args.pg else 'SQLite'} | {int(r['members']):,} | {args.lines:,} | "
          f"{r['sizes']:.1f} s | {r['first']:.1f} s ({int(r['first_changed']):,} changed) | "
          f"{r['next_day']:.1f} s ({int(r['next_changed']):,} changed) | "
          f"{r['first'] / r['sizes']:.2f}x / {r['next_day'] / r['sizes']:.2f}x |")


if __name__ == "__main__":
    main()
