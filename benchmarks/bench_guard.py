"""What the POS API's request guard (Host, Origin, Content-Type checks) and HQ's body limit
cost per request: the same trivial ASGI app called in-process with and without each layer,
interleaved in rounds so both see the same machine load. Prints a markdown table.

    python benchmarks/bench_guard.py [--requests 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tillstamp.hq.limits import BodyLimit
from tillstamp.pos_plugin.guard import RequestGuard, allowed_hosts, key_checker

BODY = b'{"receipt": "R-1", "total": 50000, "lines": [{"sku": "KOPI", "qty": 2, "price": 25000}]}'
SCOPE: dict[str, Any] = {
    "type": "http", "method": "POST", "path": "/v1/sales", "query_string": b"", "asgi": {"version": "3.0"},
    "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8765), "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8765"), (b"content-type", b"application/json"),
                (b"content-length", str(len(BODY)).encode()), (b"accept", b"*/*"),
                (b"user-agent", b"python-requests/2.32"), (b"connection", b"keep-alive")],
}


async def bare(scope: Any, receive: Any, send: Any) -> None:
    """A trivial endpoint: reads the body, answers 200."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def drive(app: Any, n: int) -> float:
    never = asyncio.Event()

    def receiver() -> Any:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # as a server does: nothing more until the client goes away
                await never.wait()
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}

        return receive

    async def send(_: Any) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await app(SCOPE, receiver(), send)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    """Run the rounds and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    hosts, any_ip = allowed_hosts("127.0.0.1")
    apps = {
        "bare app": bare,
        "POS guard (open)": RequestGuard(bare, hosts=hosts, any_ip=any_ip),
        "POS guard (keyed)": RequestGuard(bare, hosts=hosts, any_ip=any_ip,
                                          key_check=key_checker("k", "X-API-Key", "tillstamp_key")),
        "HQ body limit + X-HQ-Time": BodyLimit(bare, limit=8 * 1024 * 1024, extra_headers=lambda: [
            (b"x-hq-time", str(int(time.time() * 1000)).encode())]),
    }
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(args.rounds):
        for name, app in apps.items():
            times[name].append(asyncio.run(drive(app, args.requests)))
    base = statistics.median(times["bare app"])
    print("| layer | µs per request (median of rounds) | added µs | ratio to bare |")
    print("|---|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {med - base:+.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
