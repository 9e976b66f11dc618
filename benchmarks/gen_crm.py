"""A seeded CRM data set written straight into HQ's read model, for benchmarks.

`generate(store, members=N, lines=M, seed=S, as_of=D)` fills `crm_members`, `sale_lines` and
(with `stamps=True`) stamp events in `events` (each member's balance their sum), in bulk: COPY on
PostgreSQL, executemany on
SQLite. The same seed gives the same rows. Shapes follow a small chain: 20 stores, 2,000
SKUs in 30 categories, visits per member skewed (a few regulars, many one-off buyers), 10 %
guest sales, 3 % voided sales, 1-5 lines per sale, three years of history before D.

    python benchmarks/gen_crm.py --db postgresql://... --members 200000 --lines 5000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPOCH = dt.date(1970, 1, 1)
AS_OF = dt.date(2026, 3, 1)
STORES = [f"JKT-{i:02d}" for i in range(1, 13)] + [f"SBY-{i:02d}" for i in range(1, 5)] + \
         [f"DPS-{i:02d}" for i in range(1, 5)]
CATEGORIES = ["COFFEE", "TEA", "PASTRY", "SNACK", "MILK", "JUICE", "WATER", "BREAD", "CAKE", "RICE",
              "NOODLE", "SAUCE", "SOAP", "SHAMPOO", "TISSUE", "CANDY", "ICE", "FROZEN", "EGG", "OIL",
              "SUGAR", "SALT", "SPICE", "FRUIT", "VEG", "MEAT", "FISH", "TOY", "PAPER", "BATTERY"]
TIERS = ["bronze", "silver", "gold"]
BADGES = ["first-visit", "coffee-lover", "weekend", "streak-3", "explorer"]
MEMBER_COLS = ("member", "phone", "name", "email", "birthday", "external_id", "store", "enrolled_at",
               "enrolled_day", "consent_whatsapp", "consent_email", "consent_sms", "balance", "tier", "badges",
               "merged_into", "erased")
LINE_COLS = ("sale", "line", "member", "store", "terminal", "receipt", "at_utc", "local_date", "day",
             "local_hour", "weekday", "sku", "name", "category", "qty", "amount", "voided")
EVENT_COLS = ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body", "digest")
HISTORY_DAYS = 3 * 365
CHUNK = 100_000


def _members(rng: random.Random, n: int, d: int) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        enrolled = d - rng.randint(1, HISTORY_DAYS)
        bday = EPOCH + dt.timedelta(days=rng.randint(-20_000, 12_000))
        enrolled_at = dt.datetime.combine(EPOCH + dt.timedelta(days=enrolled), dt.time(3), dt.UTC).isoformat()
        yield (f"M{i:07d}", f"+62812{i:07d}", f"Member {i}", None, bday.isoformat(), f"EXT-{i}",
               rng.choice(STORES), enrolled_at, enrolled, int(rng.random() < 0.6), int(rng.random() < 0.3),
               int(rng.random() < 0.2), rng.randint(0, 40), rng.choices(TIERS, (70, 22, 8))[0],
               json.dumps(rng.sample(BADGES, rng.choice((0, 0, 1, 2)))), None, 0)


def _sales(rng: random.Random, n_members: int, n_lines: int, d: int) -> Iterator[list[tuple[Any, ...]]]:
    """Each item is one sale's lines."""
    weights = [rng.paretovariate(1.3) for _ in range(n_members)]  # a few regulars, many one-off buyers
    members = rng.choices(range(n_members), weights, k=n_lines // 3 + 1)
    made = s = 0
    while made < n_lines:
        m = members[s % len(members)]
        member = None if rng.random() < 0.10 else f"M{m:07d}"
        day = d - rng.randint(1, HISTORY_DAYS) if rng.random() < 0.7 else d - rng.randint(1, 120)
        date = EPOCH + dt.timedelta(days=day)
        hour = rng.randint(7, 21)
        at = dt.datetime.combine(date, dt.time(hour), dt.UTC) - dt.timedelta(hours=7)
        store = STORES[m % len(STORES)] if rng.random() < 0.8 else rng.choice(STORES)
        voided = int(rng.random() < 0.03)
        k = min(rng.randint(1, 5), n_lines - made)
        lines = []
        for j in range(k):
            sku = rng.randint(0, 1999)
            qty = rng.randint(1, 3)
            lines.append((f"S{s:09d}", j, member, store, f"{store}-T1", f"R{s}", at.isoformat(), date.isoformat(),
                          day, hour, date.weekday(), f"SKU{sku:04d}", f"Product {sku}", CATEGORIES[sku % 30], qty,
                          0 if voided else qty * rng.randint(5, 120) * 500, voided))
        made += k
        s += 1
        yield lines


def _copy_value(v: Any) -> str:
    if v is None:
        return "\\N"
    return str(v).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _bulk(store: Any, table: str, cols: Sequence[str], rows: Iterator[tuple[Any, ...]]) -> int:
    n = 0
    pg = type(store).__name__ == "PgHqStore"
    while True:
        chunk = [r for _, r in zip(range(CHUNK), rows, strict=False)]
        if not chunk:
            return n
        with store._tx() as c:
            if pg:
                buf = io.StringIO()
                for r in chunk:
                    buf.write("\t".join(map(_copy_value, r)) + "\n")
                with c.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    copy.write(buf.getvalue())
            else:
                c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                              chunk)
        n += len(chunk)


def generate(store: Any, *, members: int, lines: int, seed: int = 1, as_of: dt.date = AS_OF,
             stamps: bool = True) -> dict[str, int]:
    """Fill the read model (and stamp events) of an empty HQ store; returns row counts."""
    rng = random.Random(seed)
    d = (as_of - EPOCH).days
    n_members = _bulk(store, "crm_members", MEMBER_COLS, _members(rng, members, d))
    events: list[tuple[Any, ...]] = []
    gseq = 0

    def sale_rows() -> Iterator[tuple[Any, ...]]:
        nonlocal gseq
        for sale in _sales(rng, members, lines, d):
            yield from sale
            first = sale[0]
            if stamps and first[2] is not None and not first[16]:
                gseq += 1
                # the earn event of the sale; now and then a redemption takes 10 stamps
                n = -10 if gseq % 7 == 0 else 1 + len(sale)
                events.append((f"E{gseq:010d}", first[4], first[3], gseq, "stamps.earned", first[2],
                               first[6], n, first[0], "{}", "-"))

    n_lines = _bulk(store, "sale_lines", LINE_COLS, sale_rows())
    n_events = _bulk(store, "events", EVENT_COLS, iter(events)) if stamps else 0
    if stamps:  # as ingest keeps it: a member's balance is the sum of their stamp events
        with store._tx() as c:
            c.execute("UPDATE crm_members SET balance = 0")
            c.execute("UPDATE crm_members SET balance = t.s FROM (SELECT member, sum(stamps) AS s FROM events "
                      "WHERE member IS NOT NULL GROUP BY member) t WHERE t.member = crm_members.member")
    store.refresh_day_rollup()  # ingest keeps it; lines written straight in need it built
    if type(store).__name__ == "PgHqStore":
        # VACUUM as autovacuum would on a live HQ: rows written by COPY have no visibility map
        # yet, so every index-only plan would still read the table (VACUUM runs outside a
        # transaction, hence a connection of its own).
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:
            for table in ("crm_members", "sale_lines", "member_days", "events"):
                conn.execute(f"VACUUM ANALYZE {table}")
    else:
        with store._tx() as c:
            c.execute("ANALYZE")
    return {"members": n_members, "lines": n_lines, "events": n_events}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="an HQ database URL (its read model should be empty)")
    ap.add_argument("--members", type=int, default=200_000)
    ap.add_argument("--lines", type=int, default=5_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    from tillstamp.hq.store import open_hq_store

    store = open_hq_store(args.db)
    t = time.perf_counter()
    got = generate(store, members=args.members, lines=args.lines, seed=args.seed)
    store.close()
    print(json.dumps({**got, "seconds": round(time.perf_counter() - t, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
