"""Segment preview per leaf against a hand-written SQL query for the same question, same run.

A throwaway PostgreSQL (or SQLite with --sqlite) is filled by `gen_crm.generate` (200,000
members and 5 million sale lines by default); each leaf is previewed through `Crm.preview`
(parse, compile, count and a sample of 20: what `hq segment preview` and the API do) and
the hand-written query counts the same members. Both run `--runs` times, interleaved; the
table shows medians and their ratio. Targets (issue 12): p50 under 500 ms and within 2x.

    python benchmarks/bench_segments.py [--members N] [--lines M] [--runs R] [--sqlite]
    python benchmarks/gen_crm.py --db URL && python benchmarks/bench_segments.py --db URL --generated
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gen_crm import generate
from sync.pgserver import PgServer

from tillstamp.hq.crm import Crm
from tillstamp.hq.segments import AsOf, epoch_day
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store

POP = "m.merged_into IS NULL AND m.erased = 0 AND (m.enrolled_day IS NULL OR m.enrolled_day < {d})"
EXPIRY_MONTHS = 12


def cases(asof: AsOf, store: str = "JKT-01", category: str = "COFFEE") -> list[tuple[str, dict[str, Any], str]]:
    """(leaf, definition, the hand-written count for the same question). Values are literals
    here because the benchmark owns them; the compiled queries bind theirs."""
    D = epoch_day(asof.date)
    pop = POP.format(d=D)
    lines = f"sale_lines s WHERE s.member IS NOT NULL AND s.voided = 0 AND s.day < {D}"
    cutoff = asof.start_utc().isoformat()
    lo, hi = asof.expiry_window(14) or ("", "")
    bdays = ", ".join(f"'{x}'" for x in asof.birthdays(7))
    return [
        ("last_visit_days", {"last_visit_days": {"min": 30, "max": 90}},
         (f"SELECT count(*) FROM crm_members m JOIN (SELECT s.member, max(s.day) AS last FROM {lines} "
         f"GROUP BY s.member) t ON t.member = m.member WHERE {pop} AND t.last BETWEEN {D - 90} AND {D - 30}")),
        ("visits", {"visits": {"min": 5, "within_days": 90}},
         (f"SELECT count(*) FROM crm_members m JOIN (SELECT s.member FROM {lines} AND s.day >= {D - 90} "
         f"GROUP BY s.member HAVING count(DISTINCT s.sale) >= 5) t ON t.member = m.member WHERE {pop}")),
        ("spend", {"spend": {"min": 500000, "within_days": 365}},
         (f"SELECT count(*) FROM crm_members m JOIN (SELECT s.member FROM {lines} AND s.day >= {D - 365} "
         f"GROUP BY s.member HAVING sum(s.amount) >= 500000) t ON t.member = m.member WHERE {pop}")),
        ("bought", {"bought": {"category": category, "min_times": 2, "within_days": 60}},
         (f"SELECT count(*) FROM crm_members m JOIN (SELECT s.member FROM {lines} AND s.day >= {D - 60} "
         f"AND s.qty > 0 AND s.category = '{category}' GROUP BY s.member HAVING count(DISTINCT s.sale) >= 2) t "
         f"ON t.member = m.member WHERE {pop}")),
        ("store", {"store": [store]},
         (f"SELECT count(*) FROM crm_members m WHERE {pop} AND (m.store = '{store}' OR EXISTS (SELECT 1 FROM "
         f"{lines} AND s.member = m.member AND s.store = '{store}'))")),
        ("tier", {"tier": ["gold"]}, f"SELECT count(*) FROM crm_members m WHERE {pop} AND m.tier = 'gold'"),
        ("balance", {"balance": {"min": 8}}, f"SELECT count(*) FROM crm_members m WHERE {pop} AND m.balance >= 8"),
        ("badge", {"badge": "coffee-lover"},
         f"SELECT count(*) FROM crm_members m WHERE {pop} AND m.badges LIKE '%\"coffee-lover\"%'"),
        ("consent", {"consent": "whatsapp"},
         f"SELECT count(*) FROM crm_members m WHERE {pop} AND m.consent_whatsapp = 1"),
        ("birthday_within_days", {"birthday_within_days": 7},
         f"SELECT count(*) FROM crm_members m WHERE {pop} AND substr(m.birthday, 6, 5) IN ({bdays})"),
        ("enrolled_within_days", {"enrolled_within_days": 30},
         f"SELECT count(*) FROM crm_members m WHERE {pop} AND m.enrolled_day >= {D - 30} AND m.enrolled_day < {D}"),
        ("stamps_expiring_within_days", {"stamps_expiring_within_days": 14},
         f"WITH b AS (SELECT member, sum(stamps) AS bal FROM events WHERE member IS NOT NULL AND at < '{cutoff}' "
         "GROUP BY member), l AS (SELECT member, at, sum(stamps) OVER (PARTITION BY member ORDER BY gseq DESC) "
         f"- stamps AS newer FROM events WHERE member IS NOT NULL AND stamps > 0 AND at < '{cutoff}') "
         "SELECT count(*) FROM crm_members m WHERE " + pop + " AND EXISTS (SELECT 1 FROM l JOIN b ON "
         f"b.member = l.member WHERE l.member = m.member AND l.newer < b.bal AND l.at >= '{lo}' AND l.at < '{hi}')"),
        ("rfm", {"rfm": ["champions", "loyal"]},
         (f"SELECT count(*) FROM crm_members m JOIN (SELECT s.member, {D} - max(s.day) AS r, "
         f"count(DISTINCT s.sale) FILTER (WHERE s.day >= {D - 365}) AS f FROM {lines} GROUP BY s.member) t "
         f"ON t.member = m.member WHERE {pop} AND t.r <= 60 AND t.f >= 6")),
    ]


def _time(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", type=int, default=200_000)
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--db", help="an existing HQ database (e.g. an imported shop) instead of generated data")
    ap.add_argument("--generated", action="store_true",
                    help="--db already holds gen_crm.py data (kept from an earlier run): its as-of, store and category")
    ap.add_argument("--leaf", action="append", help="only this leaf (repeatable)")
    args = ap.parse_args()
    server = None
    tmp = tempfile.TemporaryDirectory()
    if args.db:
        url = args.db
    elif args.sqlite:
        url = f"sqlite:///{tmp.name}/hq.db"
    else:
        server = PgServer()
        url = server.url()
    store = open_hq_store(url)
    try:
        clock_at = dt.datetime(2026, 3, 1, 5, tzinfo=dt.UTC)
        store_id, category = "JKT-01", "COFFEE"
        if not args.db:
            t = time.perf_counter()
            got = generate(store, members=args.members, lines=args.lines)
            print(f"generated {got} in {time.perf_counter() - t:.0f} s", flush=True)
        elif not args.generated:  # the day after the last sale, the busiest store and category
            with store._tx(write=False) as c:
                last = c.execute("SELECT max(local_date) FROM sale_lines").fetchone()[0]
                store_id = c.execute("SELECT store FROM sale_lines GROUP BY store ORDER BY count(*) DESC "
                                     "LIMIT 1").fetchone()[0]
                category = c.execute("SELECT category FROM sale_lines WHERE category IS NOT NULL GROUP BY "
                                     "category ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
            clock_at = dt.datetime.combine(dt.date.fromisoformat(last) + dt.timedelta(days=1), dt.time(12),
                                           dt.UTC)
        hq = Hq(store, clock=lambda: clock_at)
        src = tomllib.loads((ROOT / "examples" / "program.toml").read_text(encoding="utf-8"))
        src["expiry"] = {"months": EXPIRY_MONTHS}
        with store._tx(write=False) as c:
            published = c.execute("SELECT count(*) FROM programs").fetchone()[0]
        if not args.db or (args.generated and not published):
            hq.publish_program(src)
        crm = Crm(hq)
        asof = crm.asof()
        print(f"as of {asof.date}, store {store_id}, category {category}, expiry {asof.expiry_months} months")
        print("| leaf | members | preview p50 ms | hand-written p50 ms | ratio |")
        print("|---|---|---|---|---|")
        worst = 0.0
        for leaf, definition, hand in cases(asof, store_id, category):
            if args.leaf and leaf not in args.leaf:
                continue
            with store._tx(write=False) as c:
                want = int(c.execute(hand).fetchone()[0])
            p = crm.preview(definition, asof.date)
            assert p.count == want, (leaf, p.count, want)
            ours, theirs = [], []
            for _ in range(args.runs):
                ours.append(_time(lambda d=definition: crm.preview(d, asof.date)))

                def run_hand(sql: str = hand) -> None:
                    with store._tx(write=False) as c:
                        c.execute(sql).fetchone()
                theirs.append(_time(run_hand))
            a, b = statistics.median(ours), statistics.median(theirs)
            worst = max(worst, a / b)
            print(f"| {leaf} | {want:,} | {a:.1f} | {b:.1f} | {a / b:.2f}x |", flush=True)
        print(f"\nworst ratio {worst:.2f}x")
    finally:
        store.close()
        if server is not None:
            server.stop()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
