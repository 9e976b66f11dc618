"""Sync benchmark: drain a till's backlog to HQ over loopback HTTP, for the SQLite and the
PostgreSQL HQ, against the raw ceiling of the same database.

    python benchmarks/bench_sync.py [--events 50000] [--batch N] [--repeat 3] [--skip-pg | --skip-sqlite]

End to end: `tillstamp sync push` against `tillstamp hq serve` (fsync on), signed gzip
batches, every guarantee on. "drain" is the push itself (the seconds `push` reports: first
ledger read to last acknowledgement); "process" is the wall time of the whole command,
including starting Python and importing the CLI.

Raw ceiling: the bare bulk insert of the same rows into the same kind of database, batch
by batch, one committed transaction each, with no HTTP, no checks, no positions, balances
or feed: on PostgreSQL COPY into a temporary staging table then INSERT ... SELECT ... ON
CONFLICT (id) DO NOTHING; on SQLite (WAL, synchronous=FULL) executemany INSERT ... ON
CONFLICT (id) DO NOTHING. Rows are built before the clock starts.

Each measurement is repeated (`--repeat`, each time with a fresh HQ database and a fresh
till, the ceiling right after its drain) because these machines are shared and noisy: the
table gives the median and the range, and the ratio is the median of the per-run ratios.

Prints a markdown table: events/s, the ratio ceiling / end to end, and the peak RSS of the
till process while draining (its VmHWM, polled).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sync.pgserver import PgServer, pg_bin

from tillstamp.agent.enroll import init_with_hq
from tillstamp.agent.till import open_till
from tillstamp.hq.service import Hq, load_json_or_toml
from tillstamp.hq.store import EVENT_COLS, open_hq_store
from tillstamp.hq.store_pg import SCHEMA as PG_SCHEMA
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, new_id
from tillstamp.sync.client import MAX_EVENTS
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


def _hwm_kib(pid: int) -> int:
    """The process's own peak RSS (VmHWM). Not ru_maxrss: Linux carries the parent's peak into a
    child across fork/vfork + exec, so a child's ru_maxrss is at least the benchmark's own size."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def _cpu_s(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a process, all its threads; with `children`, also those of
    its children it has reaped (a PostgreSQL backend's, once its connection closed)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(x) for x in fields[11:15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def pg_cpu_s(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, its live processes and those it reaped."""
    total = _cpu_s(postmaster, children=True)
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == postmaster:
                total += _cpu_s(int(d))
    return total


def drain(data: Path, batch: int | None) -> tuple[float, float, int]:
    """Seconds the push took (as it reports), seconds of the whole command, its peak RSS in KiB."""
    start = time.perf_counter()
    extra = ["--batch", str(batch)] if batch else []
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([TILLSTAMP, "sync", "push", "--data", str(data), "--json", *extra], stdout=out)
        peak = 0
        while proc.poll() is None:  # VmHWM only grows: the last reading before exit is the peak
            peak = max(peak, _hwm_kib(proc.pid))
            time.sleep(0.005)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"push failed: {proc.returncode}")
        out.seek(0)
        report = json.loads(out.read())
    return float(report["seconds"]), took, peak


def ledger_rows(data: Path) -> list[tuple[object, ...]]:
    """The till's events as HQ stores them (EVENT_COLS), under fresh ids."""
    with open_till(data) as till:
        cols = "id || 'R', terminal, store, seq, kind, member, at, stamps, ref, body, hash"
        return list(till.store.conn.execute(f"SELECT {cols} FROM ledger ORDER BY seq"))


def ceiling(url: str, rows: list[tuple[object, ...]], batch: int) -> float:
    """Seconds for the bare bulk insert of `rows` in batches (see the module docstring)."""
    cols = ", ".join(EVENT_COLS)
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE events (gseq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
                     "terminal TEXT NOT NULL, store TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, "
                     "member TEXT, at TEXT NOT NULL, stamps INTEGER NOT NULL, ref TEXT, body TEXT NOT NULL, "
                     "digest TEXT NOT NULL) STRICT")
        conn.execute("CREATE INDEX events_member ON events(member, gseq)")
        sql = f"INSERT INTO events({cols}) VALUES ({', '.join('?' * len(EVENT_COLS))}) ON CONFLICT(id) DO NOTHING"
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(sql, rows[i:i + batch])
            conn.execute("COMMIT")
        took = time.perf_counter() - start
        conn.close()
        return took
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for ddl in PG_SCHEMA:  # the same events table and indexes as HQ's
            conn.execute(ddl)
        conn.execute("CREATE TEMP TABLE staging (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            with conn.transaction(), conn.cursor() as c:
                with c.copy(f"COPY staging ({cols}) FROM STDIN") as copy:
                    for r in rows[i:i + batch]:
                        copy.write_row(r)
                c.execute(f"INSERT INTO events({cols}) SELECT {cols} FROM staging ON CONFLICT(id) DO NOTHING")
        return time.perf_counter() - start


def run(name: str, url_factory: object, n: int, batch: int | None, root: Path,
        postmaster: int | None = None) -> dict[str, float]:
    url = url_factory()  # type: ignore[operator]
    code = prepare_hq(url)
    proc, base = serve(url)
    try:
        data = make_till(root / name, base, code, n)
        hq0, pg0 = _cpu_s(proc.pid), pg_cpu_s(postmaster) if postmaster else 0.0
        took, wall, rss = drain(data, batch)
        hq_cpu, pg_cpu = _cpu_s(proc.pid) - hq0, pg_cpu_s(postmaster) - pg0 if postmaster else 0.0
    finally:
        proc.terminate()
        proc.wait(10)
    raw = ceiling(url_factory(), ledger_rows(data), batch or MAX_EVENTS)  # type: ignore[operator]
    shutil.rmtree(root / name, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"{name}: end to end {n / took:,.0f} ev/s, ceiling {n / raw:,.0f} ev/s, HQ CPU {hq_cpu:.2f} s, "
          f"PostgreSQL CPU {pg_cpu:.2f} s, load {load:.1f}", file=sys.stderr, flush=True)
    return {"e2e": n / took, "wall": n / wall, "raw": n / raw, "rss_mib": rss / 1024, "hq_cpu": hq_cpu,
            "pg_cpu": pg_cpu}


def run_pg(n: int, batch: int | None, root: Path) -> dict[str, float]:
    """One PostgreSQL run on a server of its own, so that no run pays for the last one's
    checkpoint or autovacuum."""
    server = PgServer(fsync=True)
    try:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        return run("postgresql", server.url, n, batch, root, pid)
    finally:
        server.stop()


def summary(name: str, n: int, runs: list[dict[str, float]]) -> dict[str, object]:
    """Medians and ranges over repeated runs."""
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def span(key: str, fmt: str = ",.0f") -> str:
        return f"{min(r[key] for r in runs):{fmt}}–{max(r[key] for r in runs):{fmt}}"

    for r in runs:
        r["ratio"] = r["raw"] / r["e2e"]
    return {"hq": name, "events": n, "runs": len(runs), "e2e": med("e2e"), "e2e_span": span("e2e"),
            "wall": med("wall"), "raw": med("raw"), "raw_span": span("raw"), "ratio": med("ratio"),
            "ratio_span": span("ratio", ".2f"), "rss_mib": max(r["rss_mib"] for r in runs),
            "hq_cpu": med("hq_cpu"), "pg_cpu": med("pg_cpu")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=None, help=f"events per batch (default: the CLI's, {MAX_EVENTS})")
    ap.add_argument("--repeat", type=int, default=3, help="runs per HQ storage (median and range reported)")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--skip-sqlite", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    results = []
    try:
        counter = iter(range(10**6))
        if not args.skip_sqlite:
            results.append(summary("sqlite", args.events, [
                run("sqlite", lambda: f"sqlite:///{root / f'hq{next(counter)}.db'}", args.events, args.batch, root)
                for _ in range(args.repeat)]))
        if not args.skip_pg and pg_bin() is not None:
            results.append(summary("postgresql", args.events, [
                run_pg(args.events, args.batch, root) for _ in range(args.repeat)]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nSync drain, {args.events} events, batch {args.batch or MAX_EVENTS}, median of {args.repeat} runs "
          f"(range) — {dt.date.today()}, nproc {os.cpu_count()}, {platform.machine()}, "
          f"Python {platform.python_version()}\n")
    print("| HQ storage | events | end to end, drain (ev/s) | whole command (ev/s) | raw ceiling (ev/s) "
          "| ceiling / e2e | till peak RSS | HQ CPU, s | PostgreSQL CPU, s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['hq']} | {r['events']} | {r['e2e']:,.0f} ({r['e2e_span']}) | {r['wall']:,.0f} | "
              f"{r['raw']:,.0f} ({r['raw_span']}) | {r['ratio']:.2f}x ({r['ratio_span']}) | {r['rss_mib']:.0f} MiB | "
              f"{r['hq_cpu']:.2f} | {r['pg_cpu']:.2f} |")


if __name__ == "__main__":
    main()
