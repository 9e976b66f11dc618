"""Offers for a segment (pure): periods, windows, the best offer, multipliers, freshness."""

from __future__ import annotations

import datetime as dt
import tomllib

from support import EXAMPLE_PROGRAM

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.offers import Tagging, applicable, offer_awards, offer_event_id, offer_period
from tillstamp.loyalty.program import Program, parse_program

FRIDAY = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)  # 10:00 in Jakarta


def program(*offers: dict[str, object], **earn: object) -> Program:
    src = tomllib.loads(EXAMPLE_PROGRAM.read_text(encoding="utf-8"))
    src["earn"]["offer"] = list(offers)
    src["earn"].update(earn)
    return parse_program(src)


def tags(*names: str, age_days: float = 1) -> Tagging:
    return Tagging(frozenset(names), {}, FRIDAY - dt.timedelta(days=age_days))


def test_periods_are_iso_weeks_months_or_the_whole_program_in_the_store_zone() -> None:
    p = program({"id": "w", "segment": "s", "stamps": 1, "per": "week"}, {"id": "m", "segment": "s", "stamps": 1},
                {"id": "p", "segment": "s", "stamps": 1, "per": "program"})
    w, m, once = p.offers
    # 30 Nov 2026 23:30 UTC is 1 Dec 06:30 in Jakarta: a new month there.
    late = dt.datetime(2026, 11, 30, 23, 30, tzinfo=dt.UTC).astimezone(p.zone)
    assert (offer_period(w, late), offer_period(m, late), offer_period(once, late)) == ("2026-W49", "2026-12",
                                                                                         "program")
    assert offer_event_id("M", m, "2026-12") == offer_event_id("M", m, "2026-12") != offer_event_id("N", m, "2026-12")


def test_the_best_offer_applies_once_and_a_window_or_stale_tags_keep_it_away() -> None:
    p = program({"id": "dua", "segment": "lapsed-30", "multiplier": 2},
                {"id": "tiga", "segment": "vip", "stamps": 3},
                {"id": "sabtu", "segment": "vip", "stamps": 9, "days": ["sat"]})
    [award] = offer_awards(p, "M", tags("lapsed-30", "vip"), [], FRIDAY, "S/1", 5)
    assert (award.body["offer"], award.stamps, award.kind, award.ref) == ("dua", 5, ev.EARNED, "S/1")
    assert award.id == offer_event_id("M", p.offers[0], "2026-11")
    # With "dua" given this month, "tiga" is next; the Saturday one is outside its window.
    [award2] = offer_awards(p, "M", tags("lapsed-30", "vip"), [award], FRIDAY, "S/2", 5)
    assert award2.body["offer"] == "tiga" and award2.stamps == 3
    saturday = FRIDAY + dt.timedelta(days=1)
    assert [o.id for o in applicable(p, "M", tags("vip", age_days=0), [award2], saturday)] == ["sabtu"]
    # A multiplier on a sale that earned nothing gives nothing, and is not used up.
    assert offer_awards(p, "M", tags("lapsed-30"), [], FRIDAY, "S/3", 0) == []
    # Not tagged, no tags, or tags older than max_tag_age_days: nothing.
    assert offer_awards(p, "M", tags("other"), [], FRIDAY, "S/4", 5) == []
    assert offer_awards(p, "M", None, [], FRIDAY, "S/4", 5) == []
    assert offer_awards(p, "M", tags("lapsed-30", age_days=7.5), [], FRIDAY, "S/4", 5) == []
    p30 = program({"id": "dua", "segment": "lapsed-30", "multiplier": 2}, max_tag_age_days=30)
    assert offer_awards(p30, "M", tags("lapsed-30", age_days=7.5), [], FRIDAY, "S/4", 5)
