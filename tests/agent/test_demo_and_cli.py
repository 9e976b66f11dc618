"""`tillstamp demo` runs the scripted morning in well under a minute; `print reprint` works."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from agent.kit import make_till, sale
from tillstamp.agent.till import open_till
from tillstamp.drivers.escpos_decode import decode
from tillstamp.loyalty.sale import parse_sale

TILLSTAMP = str(Path(sys.executable).parent / "tillstamp")


def test_demo_runs_the_morning_and_writes_receipts(tmp_path: Path) -> None:
    t = time.monotonic()
    r = subprocess.run([TILLSTAMP, "--json", "demo", "--out", str(tmp_path / "out")], check=False, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.monotonic() - t < 60
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(report["story"]) >= 10
    assert len(report["receipts"]) == 5 and all((tmp_path / "out" / p).stat().st_size > 1000
                                                  for p in report["receipts"])
    assert report["members"]["dewi"]["balance"] == 3


def test_print_reprint_writes_the_receipt_to_a_printer(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    with open_till(data) as till:
        r = till.service.record_sale(parse_sale(sale("R7"), now=till.service.now()))
    out = tmp_path / "reprint.bin"
    done = subprocess.run([TILLSTAMP, "--data", str(data), "print", "reprint", "R7", "--printer", f"file://{out}"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = decode(out.read_bytes())
    assert "No R7" in " ".join(doc.text) and doc.qr == [r.claim]
    missing = subprocess.run([TILLSTAMP, "--data", str(data), "print", "reprint", "NOPE"], check=False, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode == 2 and "NOPE" in missing.stderr


def test_agent_commands_have_help() -> None:
    for args in (["agent", "run", "--help"], ["print", "reprint", "--help"], ["demo", "--help"]):
        r = subprocess.run([TILLSTAMP, *args], check=False, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage:" in r.stdout
