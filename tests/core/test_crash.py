"""Crash test: `tillstamp sale record` SIGKILLed at random moments, then fed the same sales
again. Every sale whose result line was printed comes back as a duplicate, no sale is
counted twice, and `ledger verify` passes."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from support import EXAMPLE_PROGRAM, JAKARTA, Clock, sale_dict

from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Service
from tillstamp.agent.store import MemberRow, open_store
from tillstamp.loyalty.program import load_program
from tillstamp.loyalty.sale import parse_sale

N_SALES = 300
ROUNDS = int(os.environ.get("TILLSTAMP_CRASH_ROUNDS", "6"))


def tillstamp(data, *argv, **kw):
    env = {**os.environ, "TILLSTAMP_HOME": str(data)}
    return subprocess.Popen([sys.executable, "-m", "tillstamp", *argv], env=env, **kw)


def sales_file(tmp_path, member):
    path = tmp_path / "sales.jsonl"
    rows = []
    for i in range(N_SALES):
        rows.append(json.dumps(sale_dict(f"R-{i:04d}", member=member if i % 3 else None)))
    path.write_text("\n".join(rows) + "\n")
    return path


def once(path, member: str) -> int:
    """The member's balance after recording every sale exactly once on a fresh till."""
    till = Service(open_store(":memory:"), load_program(EXAMPLE_PROGRAM), Keys.generate("T1"),
                   store_id="S1", terminal_id="T1", clock=Clock(dt.datetime(2026, 11, 23, 10, 0, tzinfo=JAKARTA)))
    with till.store.write():
        till.store.add_member(MemberRow(member, None, None, None, None, "test", None), 0)
    for line in path.read_text().splitlines():
        till.record_sale(parse_sale(json.loads(line), now=till.now()))
    return till.store.balance(member)


def run_until_killed(data, path, delay):
    proc = tillstamp(data, "sale", "record", str(path), "--json", stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    acked = []
    for line in out.decode().splitlines():
        try:
            acked.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the kill can cut the last line in half: it was not acknowledged
    return acked


@pytest.mark.slow
def test_sigkill_loses_nothing_acknowledged_and_counts_nothing_twice(tmp_path):
    data = tmp_path / "till"
    assert tillstamp(data, "init", "--store", "S1", "--terminal", "T1").wait() == 0
    enrol = tillstamp(data, "member", "enroll", "--phone", "081234567890", "--json", stdout=subprocess.PIPE)
    member = json.loads(enrol.communicate()[0])["member"]
    path = sales_file(tmp_path, member)
    rng = random.Random(int(os.environ.get("TILLSTAMP_SEED", "20261123")))
    acked = {}
    for _ in range(ROUNDS):
        for r in run_until_killed(data, path, rng.uniform(0.3, 1.2)):
            if not r["duplicate"]:
                assert r["receipt"] not in acked, "a sale was awarded twice"
                acked[r["receipt"]] = r
    final = tillstamp(data, "sale", "record", str(path), "--json", stdout=subprocess.PIPE)
    out, _ = final.communicate()
    assert final.returncode == 0
    results = {r["receipt"]: r for r in map(json.loads, out.decode().splitlines())}
    assert len(results) == N_SALES
    for receipt in acked:
        assert results[receipt]["duplicate"], f"{receipt} was acknowledged but not kept"
    conn = sqlite3.connect(data / "till.db")
    keys = [r[0] for r in conn.execute("SELECT ref FROM ledger WHERE kind = 'sale.recorded'")]
    assert len(keys) == len(set(keys)) == N_SALES
    balance = conn.execute("SELECT sum(stamps) FROM ledger WHERE member = ?", (member,)).fetchone()[0]
    conn.close()
    # Every acknowledged award is in the ledger...
    assert balance >= sum(r["stamps_awarded"] for r in acked.values())
    # ...and the ledger holds exactly what recording each sale once gives (a sale committed
    # just before a kill has no result line, but it is still counted once, not twice).
    assert balance == once(path, member)
    verify = tillstamp(data, "ledger", "verify", "--json", stdout=subprocess.PIPE)
    assert json.loads(verify.communicate()[0])["ok"]
