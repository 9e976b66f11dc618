"""Test support shared by every test folder: paths, a settable clock, sample sales."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE_PROGRAM = ROOT / "examples" / "program.toml"
JAKARTA = dt.timezone(dt.timedelta(hours=7))


def shared_data_path() -> Path:
    """Where the corpus of other projects' photos and ESC/POS streams is expected to be.

    `TILLSTAMP_TEST_DATA` wins; else `../shared/data` beside the checkout. The corpus is
    read in place and never copied into the repository (licences, size).
    """
    env = os.environ.get("TILLSTAMP_TEST_DATA")
    return Path(env) if env else SHARED / "data"


SHARED_DATA = shared_data_path()


class Clock:
    """A settable clock for tests: `clock()` is now; `clock.advance(...)` moves it."""

    def __init__(self, start: dt.datetime):
        self.t = start

    def __call__(self) -> dt.datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += dt.timedelta(**kw)




MONDAY_9AM = "2026-11-23T09:00:00+07:00"  # outside every bonus window of the example program


def sale_dict(receipt: str, *, member: str | None = None, at: str | None = MONDAY_9AM, lines=None) -> dict:
    """A valid sale as the POS sends it; a fixed time by default, so no test depends on the hour."""
    lines = lines or [{"sku": "KOPI-SUSU", "name": "Es Kopi Susu", "category": "coffee", "qty": 2, "price": 25000}]
    d = {"receipt": receipt, "lines": lines, "total": sum(ln["qty"] * ln["price"] for ln in lines)}
    if member:
        d["member"] = member
    if at:
        d["at"] = at
    return d
