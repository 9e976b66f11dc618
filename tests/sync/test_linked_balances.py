"""Balances on a till linked to head office: every balance shown is the local view of rule 6
(HQ's snapshot + this till's events after the watermark), refunds take back stamps earned
anywhere, and `ledger verify` is OK on a healthy linked till."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tillstamp.agent import ledger

from .conftest import HqHarness, TillHandle, sale

ROOT = Path(__file__).resolve().parents[2]


def earned_at_a_spent_at_b(hq: HqHarness, tmp_path: Path) -> tuple[TillHandle, TillHandle, str]:
    """A member earns 20 at till A; till B learns it from HQ."""
    a = hq.till(tmp_path, "a", "S1")
    b = hq.till(tmp_path, "b", "S2")
    m = a.service.enroll("081234567890").id
    for i in range(4):
        a.service.record_sale(sale(f"A{i}", m, 100000))
    a.client.push()
    b.client.pull()
    return a, b, m


def test_every_balance_a_linked_till_answers_is_the_local_view(hq: HqHarness, tmp_path: Path) -> None:
    _, b, m = earned_at_a_spent_at_b(hq, tmp_path)
    seen = b.service.view(m).balance
    assert seen > 20
    r = b.service.record_sale(sale("B1", m, 100000))
    assert r.balance == b.service.view(m).balance == seen + r.stamps_awarded  # not B's own 5
    out = b.service.redeem(m, "kopi-gratis")
    assert out.balance == b.service.view(m).balance == seen + r.stamps_awarded - 10  # never negative
    assert b.till.member_json(m)["balance"] == out.balance
    assert b.service.balance(m) == out.balance


def test_a_refund_takes_back_stamps_earned_at_another_till(hq: HqHarness, tmp_path: Path) -> None:
    _, b, m = earned_at_a_spent_at_b(hq, tmp_path)
    r = b.service.record_sale(sale("B1", m, 100000))
    b.service.redeem(m, "kopi-gratis")
    b.service.redeem(m, "pastry-gratis")  # B's own events now sum below zero
    assert sum(e.stamps for e in b.till.store.member_events(m)) < 0
    before = b.service.balance(m)
    row = b.till.store.sale(r.key)
    assert row is not None and row.stamps > 0
    out = b.service.refund("B1")
    assert (out.stamps, out.detail["uncollected"]) == (-row.stamps, 0)
    assert out.balance == before - row.stamps
    b.client.push()
    assert hq.hq.store.balances()[m] == out.balance  # HQ agrees: the reversal was whole


def test_ledger_verify_is_ok_on_a_healthy_linked_till(hq: HqHarness, tmp_path: Path) -> None:
    _, b, m = earned_at_a_spent_at_b(hq, tmp_path)
    b.service.redeem(m, "kopi-gratis")  # spends here what was earned at A
    report = ledger.verify(b.till.store, shown=b.service.balance)
    assert report.ok, report.problems
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tillstamp", "ledger", "verify", "--data", str(b.data), "--json"],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["ok"] is True
    # A real negative balance is still found.
    assert not ledger.verify(b.till.store, shown=lambda member: -1).ok
