"""Dashboard benchmark: p50/p95 latency of each staff page (HTML and JSON twin) and of the
segment builder's live count, over a chain-sized read model (The Complete Journey's shape:
`gen_journey.py`, or a database `tillstamp hq import` filled). The app is called in process
through its ASGI interface, so the figures are HQ's own work (SQL + rendering), not the
network's; each is also given as a ratio to `GET /v1/time` measured in the same run.

    python benchmarks/bench_dashboard.py [--db /tmp/crm.db] [--n 40]

Without --db a fresh data set is generated into a temporary file first (a few minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fastapi.testclient import TestClient

from tillstamp.hq.app import create_app
from tillstamp.hq.crm import Crm
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.web import store_web
from tillstamp.hq.web.auth import hash_password

TARGET_P95_MS = 300.0
PROGRAM = ROOT / "examples" / "program.toml"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="an HQ SQLite file with a read model (default: generate one)")
    ap.add_argument("--n", type=int, default=40, help="requests per page")
    ap.add_argument("--n-preview", type=int, default=5,
                    help="requests per live count (slower: whole segments); 0 skips them")
    a = ap.parse_args()
    db = a.db
    if db is None:
        from gen_journey import generate

        db = os.path.join(tempfile.mkdtemp(), "crm.db")
        print("generating", db, generate(f"sqlite:///{db}"), file=sys.stderr)
    # The data end on 2026-03-01: look at it from that morning, as its owner would have.
    clock_at = dt.datetime(2026, 3, 1, 1, 0, tzinfo=dt.UTC)
    hq = Hq(open_hq_store(f"sqlite:///{db}"), clock=lambda: clock_at)
    if hq.store.program() is None:
        import tomllib

        hq.publish_program(tomllib.loads(PROGRAM.read_text(encoding="utf-8")))
    crm = Crm(hq)
    if store_web.staff_user(hq.store, "bench") is None:
        crm.add_user("bench", "owner")
        crm.add_user("bench-mgr", "manager:S01")
    for name in ("bench", "bench-mgr"):
        store_web.set_password(hq.store, name, hash_password("benchmark-password"), clock_at)
    with hq.store._tx(write=False) as c:
        heavy = hq.store._x(c, "SELECT member FROM crm_members ORDER BY visits DESC LIMIT 1").fetchone()[0]
        lines = hq.store._x(c, "SELECT count(*) FROM sale_lines").fetchone()[0]
        members = hq.store._x(c, "SELECT count(*) FROM crm_members").fetchone()[0]
    app = create_app(hq)
    results: list[tuple[str, str, float, float, float]] = []

    def client(user: str) -> tuple[TestClient, str]:
        cl = TestClient(app)
        tok = re.search(r'name="csrf" value="([^"]+)"', cl.get("/login").text).group(1)  # type: ignore[union-attr]
        cl.post("/login", data={"csrf": tok, "name": user, "password": "benchmark-password"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', cl.get("/flows").text).group(1)  # type: ignore[union-attr]
        return cl, csrf

    owner, csrf = client("bench")
    manager, _ = client("bench-mgr")

    def measure(label: str, who: str, call: object, n: int | None = None) -> None:
        fn = call  # type: ignore[assignment]
        for _ in range(3):  # warm up caches and code paths
            r = fn()  # type: ignore[operator]
            assert r.status_code == 200, (label, r.status_code, r.text[:300])
        times = []
        for _ in range(n or a.n):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            times.append((time.perf_counter() - t0) * 1000)
        results.append((label, who, statistics.median(times), pct(times, 95), max(times)))
        print(f"{label}: p95 {pct(times, 95):.1f} ms", file=sys.stderr, flush=True)

    measure("GET /v1/time (baseline)", "-", lambda: owner.get("/v1/time"))
    pages = [("/", "overview"), ("/?days=90", "overview 90 days"), ("/?store=S01", "overview, one store"),
             ("/stores", "stores"), ("/members?q=Pelanggan%2012", "member search (name)"),
             ("/members?q=0812-0000-123", "member search (phone)"), (f"/members/{heavy}", "member 360 (busiest)"),
             ("/segments", "segments"), ("/flows", "flows"), ("/programs", "programs")]
    for path, label in pages:
        measure(f"GET {path} ({label})", "owner", lambda p=path: owner.get(p))  # type: ignore[misc]
        sep = "&" if "?" in path else "?"
        measure(f"GET {path}{sep}format=json", "owner", lambda p=path, s=sep: owner.get(p + s + "format=json"))  # type: ignore[misc]
    measure("GET / (manager of S01)", "manager", lambda: manager.get("/"))
    previews = () if a.n_preview <= 0 else (  # 0: skip the live counts (they take minutes)
        ({"visits": {"min": 2}}, "visits >= 2"),
        ({"last_visit_days": {"min": 14}}, "lapsed 14 days"),
        ({"all": [{"visits": {"min": 5, "within_days": 90}}, {"consent": "whatsapp"}]},
         "5 visits in 90 days and WhatsApp"))
    for definition, label in previews:
        measure(f"POST /segments/preview ({label})", "owner",
                lambda d=definition: owner.post("/segments/preview", json={"definition": d},  # type: ignore[misc]
                                                headers={"X-CSRF-Token": csrf}), a.n_preview)
    base = results[0][3]
    print(f"\n{members} members, {lines} sale lines; {a.n} requests per page ({a.n_preview} per live count), "
          f"in process (ASGI), SQLite; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| request | p50 ms | p95 ms | max ms | p95 / baseline | under 300 ms |")
    print("|---|---:|---:|---:|---:|:---:|")
    for label, _, p50, p95, mx in results:
        ok = "yes" if p95 < TARGET_P95_MS else "**no**"
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {mx:.1f} | {p95 / base:.0f}x | {ok} |")
    hq.store.close()


if __name__ == "__main__":
    main()
