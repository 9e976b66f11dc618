"""A synthetic chain's CRM at HQ, shaped like The Complete Journey (2,500 households, ~270,000
baskets, ~1.4 million lines over two years), written straight into the read model
(`crm_members`, `sale_lines`), the stamp events and the terminals of an HQ SQLite store.

For benchmarks of what reads the read model (the dashboard, segments) when the real data set
is not at hand; `tillstamp hq import` of The Complete Journey gives the same shape.

    python benchmarks/gen_journey.py OUT.db [--members 2500] [--baskets 270000] [--seed 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import random
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tillstamp.hq.store import open_hq_store

EPOCH = dt.date(1970, 1, 1)
END = dt.date(2026, 3, 1)  # the day after the last basket
DAYS = 711  # The Complete Journey spans 711 days
STORES = [f"S{i:02d}" for i in range(1, 21)]
CATEGORIES = ["kopi", "teh", "roti", "susu", "biji-kopi", "snack", "air", "es-krim", "buah", "sayur"]
MEMBER_COLS = ("member", "phone", "name", "store", "enrolled_at", "enrolled_day", "consent_whatsapp",
               "consent_email", "consent_sms", "balance", "tier", "badges", "first_day", "last_day", "visits",
               "spend", "fav_category", "fav_store", "usual_hour", "usual_weekday")
LINE_COLS = ("sale", "line", "member", "store", "terminal", "receipt", "at_utc", "local_date", "day", "local_hour",
             "weekday", "sku", "name", "category", "qty", "amount", "voided")
EVENT_COLS = ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body", "digest")


def _insert(store: Any, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with store._tx() as c:
        store._many(c, f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


def generate(url: str, members: int = 2500, baskets: int = 270_000, seed: int = 7) -> dict[str, int]:
    """Fill an empty HQ store; returns the counts written."""
    rng = random.Random(seed)
    store = open_hq_store(url)
    end_day = (END - EPOCH).days
    first_day = end_day - DAYS
    # Households differ a lot in how often they come (as in the real data): a gamma rate each.
    rates = [rng.gammavariate(0.8, 1.0) for _ in range(members)]
    cum = list(itertools.accumulate(rates))
    home = [rng.choice(STORES) for _ in range(members)]
    lines: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    per_member: dict[int, dict[str, Any]] = {}
    seqs: dict[str, int] = {}
    n_lines = 0
    for b in range(baskets):
        m = rng.choices(range(members), cum_weights=cum)[0] if b % 8 else None  # one basket in 8 is a guest
        if m is None:
            st = rng.choice(STORES)
        else:
            st = home[m] if rng.random() < 0.85 else rng.choice(STORES)
        day = first_day + rng.randrange(DAYS)
        hour = rng.choice((7, 8, 9, 12, 13, 16, 17, 18, 19, 20))
        date = EPOCH + dt.timedelta(days=day)
        at = dt.datetime.combine(date, dt.time(hour, rng.randrange(60)), dt.UTC) - dt.timedelta(hours=7)
        terminal = f"{st}-T{1 + b % 2}"
        sale = f"SALE{b:08d}"
        member = f"M{m:06d}" if m is not None else None
        amount_total = 0
        for ln in range(rng.randint(1, 9)):
            cat = rng.choice(CATEGORIES)
            qty = rng.randint(1, 3)
            amount = qty * rng.choice((8000, 12000, 18000, 25000, 32000))
            amount_total += amount
            lines.append((sale, ln, member, st, terminal, f"R{b}", at.isoformat(), date.isoformat(), day, hour,
                           date.weekday(), f"{cat.upper()}-{rng.randrange(40):02d}", cat.title(), cat, qty,
                           amount, 0))
        if member is not None:
            seq = seqs[terminal] = seqs.get(terminal, 0) + 1
            stamps = 1 + amount_total // 25000
            events.append((f"E{b:010d}", terminal, st, seq, "stamps.earned", member, at.isoformat(), stamps, f"R{b}",
                           "{}", "-"))
            pm = per_member.setdefault(m, {"balance": 0, "visits": 0, "spend": 0, "first": day, "last": day})
            pm["balance"] += stamps
            pm["visits"] += 1
            pm["spend"] += amount_total
            pm["first"], pm["last"] = min(pm["first"], day), max(pm["last"], day)
            if pm["balance"] >= 10 and rng.random() < 0.3:  # some redeem a full card
                seq = seqs[terminal] = seqs[terminal] + 1
                events.append((f"X{b:010d}", terminal, st, seq, "reward.redeemed", member,
                               (at + dt.timedelta(minutes=1)).isoformat(), -10, "kopi-gratis", "{}", "-"))
                pm["balance"] -= 10
        if len(lines) >= 200_000:
            _insert(store, "sale_lines", LINE_COLS, lines)
            n_lines += len(lines)
            lines = []
    _insert(store, "sale_lines", LINE_COLS, lines)
    n_lines += len(lines)
    _insert(store, "events", EVENT_COLS, events)
    store.refresh_day_rollup()  # segments read it; ingest would have kept it
    rows = []
    for m in range(members):
        pm = per_member.get(m, {"balance": 0, "visits": 0, "spend": 0, "first": None, "last": None})
        enrolled = first_day + rng.randrange(DAYS)
        tier = "gold" if pm["visits"] > 200 else "silver" if pm["visits"] > 60 else "bronze"
        rows.append((f"M{m:06d}", f"+62812{m:07d}", f"Pelanggan {m}", home[m],
                     dt.datetime.combine(EPOCH + dt.timedelta(days=enrolled), dt.time(3), dt.UTC).isoformat(),
                     enrolled, int(rng.random() < 0.6), int(rng.random() < 0.3), int(rng.random() < 0.2),
                     pm["balance"], tier, json.dumps([]), pm["first"], pm["last"], pm["visits"], pm["spend"],
                     rng.choice(CATEGORIES), home[m], rng.choice((8, 12, 18)), rng.randrange(7)))
    _insert(store, "crm_members", MEMBER_COLS, rows)
    _insert(store, "terminals", ("id", "store", "public_key", "acked", "last_seen", "clock_offset_s", "enrolled_at"),
            [(t, t.split("-")[0], "00" * 32, s, dt.datetime.combine(END, dt.time(1), dt.UTC).isoformat(), 0.4,
              "2024-01-01T00:00:00+00:00") for t, s in sorted(seqs.items())])
    store.close()
    return {"members": members, "baskets": baskets, "lines": n_lines, "events": len(events)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="the SQLite file to create")
    ap.add_argument("--members", type=int, default=2500)
    ap.add_argument("--baskets", type=int, default=270_000)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    if Path(a.out).exists():
        sys.exit(f"{a.out}: exists; give a new file")
    print(json.dumps(generate(f"sqlite:///{a.out}", a.members, a.baskets, a.seed)))


if __name__ == "__main__":
    main()
