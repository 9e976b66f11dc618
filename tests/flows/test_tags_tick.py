"""The flow scheduler refreshes the tills' segment tags once per store day (docs/HQ.md, "Tags
for the tills"), on the tick that holds the lease."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tillstamp.hq import store_tags

from .conftest import T0, Clock, day_of, member, put_members


def test_the_first_tick_of_a_day_refreshes_the_tags(make_engine: Any) -> None:
    clock = Clock(T0)
    eng = make_engine("sqlite:///:memory:", clock)
    store = eng.hq.store
    today = T0.astimezone(dt.timezone(dt.timedelta(hours=7))).date()
    put_members(store, [member(1, balance=9, last_day=day_of(today) - 40), member(2, balance=3)])
    assert store_tags.latest_run(store) is None
    eng.tick()
    first = store_tags.latest_run(store)
    assert first is not None and first["as_of_day"] == day_of(today)
    tags = store_tags.member_tags(store, "M00001")
    assert tags is not None and "card-almost-full" in tags["tags"]
    assert tags["hints"] == {"last_visit": "2026-01-21", "to_full_card": 1}
    assert store_tags.member_tags(store, "M00002") is None  # nothing to say: no row
    clock.now += dt.timedelta(hours=1)
    eng.tick()
    assert store_tags.latest_run(store) == first  # once per store day
    clock.now += dt.timedelta(days=1)
    eng.tick()
    again = store_tags.latest_run(store)
    assert again is not None and again["run"] > first["run"] and again["as_of_day"] == day_of(today) + 1
