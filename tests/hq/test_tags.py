"""Head office's hints for the tills, from a read-model row and the chunk's facts (pure)."""

from __future__ import annotations

import datetime as dt
import tomllib

from support import EXAMPLE_PROGRAM

from tillstamp.hq.segments import AsOf, epoch_day
from tillstamp.hq.tags import hints_for
from tillstamp.loyalty.program import parse_program

PROGRAM = parse_program(tomllib.loads(EXAMPLE_PROGRAM.read_text(encoding="utf-8")))
D = dt.date(2026, 11, 27)
ASOF = AsOf(D)


def row(**kw: object) -> dict[str, object]:
    return {"member": "M", "birthday": None, "balance": 0, "last_day": None, "tier": "bronze", **kw}


def test_each_hint_appears_only_when_it_says_something() -> None:
    assert hints_for(row(), {}, ASOF, PROGRAM) == {}
    got = hints_for(row(birthday="1990-12-01", balance=18, last_day=epoch_day(D) - 20, tier="bronze"),
                    {"reorder": [{"category": "biji-kopi", "due": "2026-11-30"},
                                 {"category": "teh", "due": "2026-12-20"}],
                     "skus": [("CROISSANT", "Croissant", 3, epoch_day(D) - 20), ("KOPI", "Kopi", 3, epoch_day(D) - 30),
                              ("TEH", "Teh", 1, epoch_day(D) - 1)],
                     "measure": 28},
                    ASOF, PROGRAM)
    assert got == {"birthday_week": True, "to_full_card": 2, "last_visit": "2026-11-07",
                   "reorder": {"category": "biji-kopi", "due": "2026-11-30"},
                   "usual": {"sku": "CROISSANT", "name": "Croissant"},
                   "tier_next": {"tier": "silver", "name": "Silver", "missing": 2}}
    # Just outside each bound: 13 days away, birthday in 7 days, 3 stamps missing, reorder in 4
    # days, a product bought once, 4 stamps from Silver (more than 10 % of 30).
    assert hints_for(row(birthday="1990-12-04", balance=17, last_day=epoch_day(D) - 13),
                     {"reorder": [{"category": "teh", "due": "2026-12-01"}],
                      "skus": [("TEH", "Teh", 1, epoch_day(D) - 1)], "measure": 26}, ASOF, PROGRAM) == {}


def test_a_birthday_on_29_february_counts_on_28_february_in_other_years() -> None:
    assert hints_for(row(birthday="2000-02-29"), {}, AsOf(dt.date(2027, 2, 25)), PROGRAM) == {"birthday_week": True}
    assert hints_for(row(birthday="2000-02-29"), {}, AsOf(dt.date(2028, 3, 1)), PROGRAM) == {}
