"""The panel's hints and the receipt's personal line, from a program, a member's view and
head office's tags (pure functions, real program and events)."""

from __future__ import annotations

import datetime as dt

from support import EXAMPLE_PROGRAM

from tillstamp.agent.hints import member_hints, offer_hints, personal_line
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event
from tillstamp.loyalty.offers import Tagging, offer_event_id
from tillstamp.loyalty.program import load_program
from tillstamp.loyalty.projections import member_view

PROGRAM = load_program(EXAMPLE_PROGRAM)
NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)  # Friday 10:00 in Jakarta


def earned(n: int, at: dt.datetime, i: int = 0) -> Event:
    return Event(f"E{i}", ev.EARNED, at, "M", n, f"S/{i}")


def sale_at(at: dt.datetime, i: int = 0) -> Event:
    return Event(f"S{i}", ev.SALE, at, "M", 0, f"S/{i}", {"receipt": str(i), "total": 50000, "lines": []})


def test_hints_speak_indonesian_first_and_follow_the_local_view() -> None:
    old = NOW - dt.timedelta(days=32)
    events = [sale_at(old), earned(9, old)]
    tags = Tagging(frozenset({"lapsed-30"}), {"birthday_week": True, "last_visit": "2026-10-26",
                                              "usual": {"sku": "CROISSANT", "name": "Croissant"},
                                              "reorder": {"category": "biji-kopi", "due": "2026-11-28"}},
                   NOW - dt.timedelta(days=1))
    view = member_view(PROGRAM, "M", events, NOW)
    texts = [h.text for h in member_hints(PROGRAM, view, tags, NOW)]
    assert texts == ["Ulang tahun minggu ini", "1 stempel lagi: Gratis 1 Es Kopi Susu", "Lama tidak datang: 32 hari",
                     "Biasanya: Croissant", "Waktunya beli lagi: biji-kopi"]
    assert [h.text for h in member_hints(PROGRAM, view, tags, NOW, "en")][:3] == [
        "Birthday this week", "1 more stamps: Gratis 1 Es Kopi Susu", "Not seen for 32 days"]
    assert [h.text for h in offer_hints(PROGRAM, "M", tags, events, NOW)] == ["Penawaran: Kangen kamu! Stempel 2x"]
    # A visit this till knows of, after head office's refresh, ends "lapsed".
    seen = [*events, sale_at(NOW - dt.timedelta(days=2), 1)]
    texts = [h.text for h in member_hints(PROGRAM, member_view(PROGRAM, "M", seen, NOW), tags, NOW)]
    assert not any("Lama tidak datang" in t for t in texts)
    # Tags older than max_tag_age_days (7): head office's hints and the offer are not shown.
    stale = Tagging(tags.tags, tags.hints, NOW - dt.timedelta(days=8))
    assert [h.kind for h in member_hints(PROGRAM, view, stale, NOW)] == ["card"]
    assert offer_hints(PROGRAM, "M", stale, events, NOW) == []
    # Given this month already: not offered again.
    period = "2026-11"
    given = Event(offer_event_id("M", PROGRAM.offers[0], period), ev.EARNED, NOW, "M", 3, "S/9",
                  {"offer": "balik-lagi"})
    assert offer_hints(PROGRAM, "M", tags, [*events, given], NOW) == []


def test_the_receipt_line_prefers_the_offer_then_a_birthday_then_the_card() -> None:
    view = member_view(PROGRAM, "M", [earn := earned(9, NOW)], NOW)
    offer = Event("O", ev.EARNED, NOW, "M", 4, "S/0", {"offer": "balik-lagi", "name": "Kangen kamu! Stempel 2x"})
    day = NOW.date()
    assert personal_line(PROGRAM, "Sari", offer, view, "1990-11-28", day) == "Kangen kamu! Stempel 2x: +4 stempel"
    assert personal_line(PROGRAM, "Sari", None, view, "1990-11-28", day) == "Selamat ulang tahun, Sari!"
    assert personal_line(PROGRAM, "", None, view, "1990-11-28", day, "en") == "Happy birthday!"
    assert personal_line(PROGRAM, "Sari", None, view, "1990-06-01", day) == "1 stempel lagi: Gratis 1 Es Kopi Susu"
    assert earn.stamps == 9
    empty = member_view(PROGRAM, "M", [earned(3, NOW)], NOW)
    assert personal_line(PROGRAM, "Sari", None, empty, None, day) is None
