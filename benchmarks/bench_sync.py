"""Sync benchmark: drain a till's backlog to HQ over loopback HTTP, for the SQLite and the
PostgreSQL HQ, against the raw ceiling of the same database (the same ingest with no HTTP).

    python benchmarks/bench_sync.py [--events 50000] [--batch 1000] [--skip-pg]

Prints a markdown table: events/s end to end, events/s raw, their ratio, and the peak RSS of
the till process (`tillstamp sync push`) while draining.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sync.pgserver import PgServer, pg_bin

from tillstamp.agent.cli_sync import init_with_hq
from tillstamp.agent.till import open_till
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, canonical, new_id
from tillstamp.sync.hq import Hq, load_json_or_toml
from tillstamp.sync.hq_store import StagedEvent, open_hq_store
from tillstamp.sync.transport import RequestsTransport

TILLSTAMP = str(Path(sys.executable).parent / "tillstamp")
T0 = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_hq(url: str) -> str:
    hq = Hq(open_hq_store(url))
    hq.publish_program(load_json_or_toml((ROOT / "examples" / "program.toml").read_text()))
    code = hq.new_code("S1")
    hq.store.close()
    return code


def serve(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([TILLSTAMP, "hq", "serve", "--db", url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(500):
        try:
            if RequestsTransport(base, timeout=1).request("GET", "/v1/time").status == 200:
                return proc, base
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.02)
    raise RuntimeError("HQ did not start")


def make_till(root: Path, base: str, code: str, n: int) -> Path:
    data = root / "till"
    init_with_hq(data, hq=base, code=code)
    members = [new_id() for _ in range(2000)]
    with open_till(data) as till:
        for start in range(0, n, 10000):
            with till.store.write():
                till.store.append(
                    [Event(new_id(), ev.EARNED, T0, members[i % len(members)], 1, f"S1/r{i}",
                           {"receipt": f"r{i}", "total": 25000, "lines": [{"sku": "KOPI", "qty": 1}]})
                     for i in range(start, min(n, start + 10000))],
                    terminal=till.config.terminal, store=till.config.store)
    return data


def drain(data: Path, batch: int) -> tuple[float, int]:
    """Seconds to push everything, and the till process's peak RSS in KiB."""
    start = time.perf_counter()
    proc = subprocess.Popen([TILLSTAMP, "sync", "push", "--data", str(data), "--json", "--batch", str(batch)],
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"push failed: {status}")
    return took, int(usage.ru_maxrss)


def ceiling(url: str, data: Path, batch: int) -> float:
    """Seconds for the same rows through the same ingest, with no HTTP (events/s ceiling)."""
    hq = Hq(open_hq_store(url))
    code = hq.new_code("S1")
    from tillstamp.loyalty import tokens
    from tillstamp.sync import protocol as p

    key = tokens.new_private_key()
    term = hq.store.enroll(code, terminal="RAW", store="S1", public_key=tokens.public_bytes(key.public_key()).hex(),
                           now=T0)
    with open_till(data) as till:
        rows = []
        for e in till.store.events():
            w = {**e.to_wire(), "terminal": term.id}
            rows.append(StagedEvent(e.id + "R", term.id, "S1", e.seq, e.kind, e.member, w["at"], e.stamps, e.ref,
                                    canonical(e.body).decode(), hashlib.sha256(canonical(w)).hexdigest()))
    del p
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        hq.store.ingest(term.id, rows[i:i + batch], [], T0, lambda m, evs: None)
    took = time.perf_counter() - start
    hq.store.close()
    return took


def run(name: str, url_factory: object, n: int, batch: int, root: Path) -> dict[str, object]:
    url = url_factory()  # type: ignore[operator]
    code = prepare_hq(url)
    proc, base = serve(url)
    try:
        data = make_till(root / name, base, code, n)
        took, rss = drain(data, batch)
    finally:
        proc.terminate()
        proc.wait(10)
    raw = ceiling(url_factory(), data, batch)  # type: ignore[operator]
    total = n
    return {"hq": name, "events": total, "e2e": total / took, "raw": total / raw, "rss_mib": rss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--skip-pg", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    results = []
    try:
        counter = iter(range(100))
        results.append(run("sqlite", lambda: f"sqlite:///{root / f'hq{next(counter)}.db'}", args.events, args.batch, root))
        if not args.skip_pg and pg_bin() is not None:
            server = PgServer(fsync=True)
            try:
                results.append(run("postgresql", server.url, args.events, args.batch, root))
            finally:
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nSync drain, {args.events} events, batch {args.batch} — {dt.date.today()}, "
          f"nproc {os.cpu_count()}, {platform.machine()}, Python {platform.python_version()}\n")
    print("| HQ storage | events | end to end (ev/s) | raw ceiling (ev/s) | ceiling / e2e | till peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['hq']} | {r['events']} | {r['e2e']:,.0f} | {r['raw']:,.0f} | "
              f"{r['raw'] / r['e2e']:.2f}x | {r['rss_mib']:.0f} MiB |")  # type: ignore[operator]


if __name__ == "__main__":
    main()
