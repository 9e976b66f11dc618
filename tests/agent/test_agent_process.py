"""`tillstamp agent run` as a real process: SIGKILL during a stream of API sales loses no
acknowledged sale (each is in the ledger exactly once); SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from agent.kit import free_port, make_till, sale, wait_for
from tillstamp.drivers.escpos_decode import decode
from tillstamp.pos_plugin.client import TillClient

TILLSTAMP = [str(Path(sys.executable).parent / "tillstamp")]


def _start(data: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*TILLSTAMP, "--data", str(data), "agent", "run", "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def up() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "agent died"
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=0.5).ok
        except requests.ConnectionError:
            return False

    # Generous: on a loaded shared machine importing and starting the agent took 16-20 s.
    try:
        wait_for(up, timeout=60, what="agent up")
    except BaseException:
        proc.kill()  # never leave an agent running behind a failed test
        proc.wait(10)
        raise
    return proc


def _ledger_sales(data: Path) -> Counter[str]:
    out = subprocess.run([*TILLSTAMP, "--data", str(data), "--json", "ledger", "show"], check=True,
                         capture_output=True, text=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    return Counter(e["body"]["receipt"] for e in events if e["kind"] == "sale.recorded")


def test_sigkill_during_a_sale_stream_loses_no_acknowledged_sale(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    port = free_port()
    acked: list[str] = []
    n = 0
    for _round in range(3):
        proc = _start(data, port)
        client = TillClient(f"http://127.0.0.1:{port}", timeout=5)
        stop = threading.Event()

        def stream(client: TillClient = client, stop: threading.Event = stop) -> None:
            nonlocal n
            while not stop.is_set():
                receipt = f"K{n:05d}"
                n += 1
                try:
                    client.record_sale(sale(receipt))
                except requests.RequestException:
                    return  # the agent died mid-request: this sale was never acknowledged
                acked.append(receipt)

        t = threading.Thread(target=stream)
        t.start()
        start = len(acked)
        wait_for(lambda start=start: len(acked) >= start + 20, what="sales flowing")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        t.join(10)
    counts = _ledger_sales(data)
    assert acked and all(counts[r] == 1 for r in acked), "an acknowledged sale is missing or doubled"
    assert all(c == 1 for c in counts.values())
    # Receipts are spooled after the answer; one more start prints what a kill left due.
    proc = _start(data, port)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    printed = {t.split()[1] for t in decode((data / "receipts.bin").read_bytes()).text if t.startswith("No ")}
    assert set(acked) <= printed, "an acknowledged sale's receipt was lost"
    verify = subprocess.run([*TILLSTAMP, "--data", str(data), "ledger", "verify"], check=False,
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_sigterm_stops_cleanly_and_logs_to_a_file(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    port = free_port()
    proc = _start(data, port)
    TillClient(f"http://127.0.0.1:{port}").record_sale(sale("T1"))
    events = requests.get(f"http://127.0.0.1:{port}/v1/events", stream=True, timeout=5)  # an open stream
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - t < 8
    events.close()
    log = (data / "logs" / "agent.log").read_text()
    assert "agent ready" in log and "agent stopped" in log
    assert b"No T1" in (data / "receipts.bin").read_bytes()


def test_refuses_a_public_bind_without_an_api_key(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    r = subprocess.run([*TILLSTAMP, "--data", str(data), "agent", "run", "--listen", "0.0.0.0:0"],
                       check=False, capture_output=True, text=True, timeout=30, env={**os.environ})
    assert r.returncode == 2 and "api_key" in r.stderr


def test_start_up_is_frozen_while_the_agent_serves_and_given_back(tmp_path: Path, monkeypatch) -> None:
    # A full collection during a POS request walks only what the requests made, not the
    # start-up objects (docs/AGENT.md, "The sale loop"); a program that called main() in its
    # own process has its collector as before once the agent stops.
    import gc
    import logging

    from tillstamp.cli import main
    from tillstamp.pos_plugin import server

    data = make_till(tmp_path / "till")
    seen: list[int] = []

    def serve(rt, listen, on_ready=None):  # the real server, up to the point it would run
        assert gc.get_freeze_count() == 0
        on_ready(8123)
        seen.append(gc.get_freeze_count())

    monkeypatch.setattr(server, "serve", serve)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["--data", str(data), "agent", "run", "--listen", "127.0.0.1:0"]) == 0
    finally:  # the agent logs to the console and its data folder: this process's logging as it was
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    assert seen and seen[0] > 1000
    assert gc.get_freeze_count() == 0
