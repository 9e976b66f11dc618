"""POS API benchmark: sale requests per second and p50/p99 latency with durable writes (real
uvicorn on loopback, WAL + synchronous=FULL), and scan-to-event latency from bytes written to
a pty to the server-sent event. Prints a markdown table.

The agent runs as `tillstamp agent run` in its own process, as on a till, so the client's work
does not share the agent's GIL; `--in-process` serves it from a thread of this process instead
(the way the tests run it).

    python benchmarks/bench_api.py [--sales 3000] [--scans 50] [--in-process]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tty
from dataclasses import replace
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tillstamp.agent.config import CONFIG_NAME, load_config, render_config
from tillstamp.agent.runtime import AgentOptions, setup
from tillstamp.agent.till import init_till
from tillstamp.pos_plugin.server import BackgroundServer

TARGET_SALE_P99_MS = 25.0
TARGET_SCAN_MS = 50.0


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def bench_sales(url: str, n: int) -> tuple[float, list[float]]:
    session = requests.Session()
    # A POS on the same machine: no proxies or .netrc from the environment (requests would
    # look them up again on every request, ~0.5 ms of client time each).
    session.trust_env = False
    lines = [{"sku": "KOPI-SUSU-AREN", "name": "Kopi Susu Aren", "qty": 2, "price": 25000}]
    for i in range(20):  # warm up connections and code paths
        session.post(url + "/v1/sales", json={"receipt": f"W{i}", "lines": lines, "total": 50000}).raise_for_status()
    times = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = session.post(url + "/v1/sales", json={"receipt": f"B{i}", "member": "0812-1111-2222" if i % 2 else None,
                                                  "lines": lines, "total": 50000})
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return n / (time.perf_counter() - start), times


def bench_scans(url: str, master: int, card: str, n: int) -> list[float]:
    got: dict[int, float] = {}
    seen = threading.Event()
    ready = threading.Event()

    def listen() -> None:
        with requests.get(url + "/v1/events", stream=True, timeout=30) as r:
            for line in r.iter_lines(chunk_size=1, decode_unicode=True):
                ready.set()
                if line and line.startswith("data:") and json.loads(line[5:])["type"] == "scan":
                    got[len(got)] = time.perf_counter()
                    seen.set()

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(5)
    times = []
    for i in range(n):
        seen.clear()
        t = time.perf_counter()
        os.write(master, card.encode() + b"\r")
        if not seen.wait(5):
            raise RuntimeError("scan event did not arrive")
        times.append((got[i] - t) * 1000)
    return times


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_process(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tillstamp agent run` on a free loopback port (this checkout's code); waits until it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "tillstamp", "--data", str(data), "agent", "run",
                             "--listen", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the agent exited at start")
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.05)  # benchmark script, not library code
    proc.kill()
    raise RuntimeError("the agent did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sales", type=int, default=3000)
    ap.add_argument("--scans", type=int, default=50)
    ap.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tillstamp-bench-"))
    data = work / "till"
    init_till(data, store="JKT-01", terminal="T1", program=ROOT / "examples" / "program.toml",
              printer=f"file://{work / 'receipts.bin'}")
    master, slave = pty.openpty()
    tty.setraw(slave)
    cfg = replace(load_config(data), scanner=f"serial://{os.ttyname(slave)}")
    (data / CONFIG_NAME).write_text(render_config(cfg), encoding="utf-8")
    if args.in_process:
        rt = setup(AgentOptions(data=data))
        server = BackgroundServer(rt).start()
        url, stop = server.url, lambda: (server.stop(), rt.shutdown())
    else:
        proc, url = agent_process(data)
        stop = lambda: (proc.terminate(), proc.wait(15))
    try:
        member = requests.post(url + "/v1/members", json={"phone": "0812-1111-2222", "name": "Bench"}).json()
        rps, sale_ms = bench_sales(url, args.sales)
        scan_ms = bench_scans(url, master, member["card"], args.scans)
    finally:
        stop()
        os.close(master)
        os.close(slave)
    where = "agent in this process" if args.in_process else "agent in its own process"
    print(f"tillstamp POS API benchmark, {dt.date.today()}, nproc {os.cpu_count()}, {platform.machine()}, "
          f"Python {platform.python_version()}, {where}\n")
    print("| measure | n | result | p50 ms | p99 ms | target |")
    print("|---|---|---|---|---|---|")
    print(f"| POST /v1/sales (durable, sequential) | {len(sale_ms)} | {rps:.0f} req/s | "
          f"{statistics.median(sale_ms):.2f} | {pct(sale_ms, 99):.2f} | p99 < {TARGET_SALE_P99_MS:.0f} ms |")
    print(f"| scan (pty bytes) to SSE event | {len(scan_ms)} | - | {statistics.median(scan_ms):.2f} | "
          f"{pct(scan_ms, 99):.2f} | < {TARGET_SCAN_MS:.0f} ms |")
    ok = pct(sale_ms, 99) < TARGET_SALE_P99_MS and pct(scan_ms, 99) < TARGET_SCAN_MS
    print(f"\ntargets {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
