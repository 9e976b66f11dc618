"""Each trigger on both backends: who is due on the store-local calendar, with which occurrence."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sync.conftest import program_source

from tillstamp.hq import store_flows as sf
from tillstamp.hq.flows import FlowError
from tillstamp.hq.scheduler import TickResult

from .conftest import T0, Clock, day_of, member, put_members

D = day_of(dt.date(2026, 3, 2))


def flow(trigger: str, extra: str = "") -> str:
    return f"""
[[flows]]
name = "f"
trigger = {{ {trigger} }}
channels = ["sms"]
holdout = 0
{extra}
[flows.sms]
body = "Halo {{{{ name }}}}, {{{{ stamps_to_go }}}} stempel lagi!"
"""


def due(eng: Any, now: dt.datetime | None = None) -> dict[str, str]:
    r = TickResult()
    eng.schedule(now or eng.hq.clock(), r)
    return {m["member"]: m["occurrence"] for m in sf.messages(eng.store)}


def local(date: str, hour: int = 10) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{date}T{hour:02d}:00:00+07:00")


def test_birthday_on_29_february_is_kept_on_28_february_in_other_years(hq_url, make_engine):
    people = [member(1, birthday="1992-02-29"), member(2, birthday="1990-02-28"), member(3, birthday="1990-03-01")]
    for now, want in ((local("2027-02-28"), {"M00001", "M00002"}), (local("2028-02-28"), {"M00002"}),
                      (local("2028-02-29"), {"M00001"})):
        eng = make_engine(hq_url, Clock(now))
        with eng.store._tx() as c:
            eng.store._x(c, "DELETE FROM crm_members")
            eng.store._x(c, "DELETE FROM flow_messages")
        put_members(eng.store, people)
        eng.set_flows(flow("birthday_in_days = 0"))
        got = due(eng)
        assert set(got) == want, now
        assert set(got.values()) == {f"birthday:{now.year}"}


def test_birthday_in_days_looks_ahead_in_the_store_zone(hq_url, make_engine):
    # 23:30 on 24 Feb in Jakarta is already 25 Feb in Jayapura
    eng = make_engine(hq_url, Clock(local("2027-02-24", 23) + dt.timedelta(minutes=30)))
    put_members(eng.store, [member(1, birthday="1992-02-28", store="S1"), member(2, birthday="1992-02-28",
                                                                                  store="JAY1")])
    eng.set_flows(flow("birthday_in_days = 3"))
    assert set(due(eng)) == {"M00002"}


def test_card_almost_full_fires_once_per_card(hq_url, make_engine):
    eng = make_engine(hq_url)
    eng.hq.publish_program(program_source())  # cards of 10
    put_members(eng.store, [member(1, balance=8), member(2, balance=9), member(3, balance=7), member(4, balance=18),
                            member(5, balance=10), member(6, balance=0)])
    eng.set_flows(flow("card_almost_full = 2"))
    assert due(eng) == {"M00001": "card:0", "M00002": "card:0", "M00004": "card:1"}
    r = eng.tick()
    assert r.sent == 3
    msgs = {m["member"]: m for m in sf.messages(eng.store)}
    assert msgs["M00001"]["state"] == "sent"


def test_enrolled_welcomes_new_members_once(hq_url, make_engine):
    eng = make_engine(hq_url)
    put_members(eng.store, [member(1, enrolled_day=D), member(2, enrolled_day=D - 30)])
    eng.set_flows(flow("enrolled = true"))
    assert due(eng) == {"M00001": "welcome"}
    assert due(eng, T0 + dt.timedelta(days=3)) == {"M00001": "welcome"}  # still in the window: no second one
    assert len(sf.messages(eng.store)) == 1


def test_tier_changed_up_fires_on_a_move_up_only(hq_url, make_engine):
    eng = make_engine(hq_url)
    eng.hq.publish_program(program_source())
    put_members(eng.store, [member(1, tier="bronze"), member(2, tier="silver"), member(3, tier="bronze")])
    eng.set_flows(flow('tier_changed = "up"'))
    assert due(eng) == {}  # the first look only remembers each tier
    with eng.store._tx() as c:
        eng.store._x(c, "UPDATE crm_members SET tier = 'silver' WHERE member = 'M00001'")
        eng.store._x(c, "UPDATE crm_members SET tier = 'bronze' WHERE member = 'M00002'")
    assert due(eng) == {"M00001": f"tier:silver:{D}"}


def _predictions(store: Any, rows: list[tuple[str, float, int | None]]) -> None:
    run = store.start_run(dt.date(2026, 3, 1), D - 1, "test", T0, {})
    store.put_predictions([(m, run, 0.5, p, 1.0, 10000, "2026-03-10", D + 8, 10, 2, "low", 7.0,
                            json.dumps([{"sku": "KOPI-SUSU", "name": "Kopi Susu"}]), "[]", "[]", reorder)
                           for m, p, reorder in rows])
    store.finish_run(run, len(rows))


def test_prediction_triggers_read_the_newest_complete_run(hq_url, make_engine):
    eng = make_engine(hq_url)
    put_members(eng.store, [member(1), member(2), member(3)])
    _predictions(eng.store, [("M00001", 0.1, D - 1), ("M00002", 0.9, D + 5), ("M00003", 0.2, None)])
    eng.set_flows(flow("p_visit_14d_below = 0.25") + flow("reorder_due = true").replace('"f"', '"r"'))
    r = TickResult()
    eng.schedule(T0, r)
    got = {(m["flow"], m["member"]) for m in sf.messages(eng.store)}
    assert got == {("f", "M00001"), ("f", "M00003"), ("r", "M00001")}


def test_stamps_expiring_uses_the_program_expiry(hq_url, make_engine):
    eng = make_engine(hq_url)
    eng.hq.publish_program(program_source())  # stamps expire after 12 months
    put_members(eng.store, [member(1, balance=5), member(2, balance=5)])
    with eng.store._tx() as c:
        for i, (m, days) in enumerate((("M00001", 350), ("M00002", 100))):
            eng.store._x(c, "INSERT INTO events(id, terminal, store, seq, kind, member, at, stamps, ref, body, digest) "
                            "VALUES (?, 'S1-T1', 'S1', ?, 'stamps.earned', ?, ?, 5, NULL, '{}', '-')",
                         (f"E{i}", i + 1, m, (T0 - dt.timedelta(days=days)).isoformat()))
    eng.set_flows(flow("stamps_expiring_within_days = 30"))
    assert set(due(eng)) == {"M00001"}


def test_an_audience_narrows_a_trigger_to_a_segment(hq_url, make_engine):
    eng = make_engine(hq_url)
    eng.hq.publish_program(program_source())
    put_members(eng.store, [member(1, last_day=D - 14, balance=9), member(2, last_day=D - 14, balance=3)])
    eng.set_flows(flow("lapsed_days = 14", 'audience = "card-almost-full"'))
    assert set(due(eng)) == {"M00001"}
    with pytest.raises(FlowError, match=r"flows\[0\]\.audience: segment 'nope' not found"):
        eng.set_flows(flow("lapsed_days = 14", 'audience = "nope"'))


def test_lapsed_days_catches_up_a_missed_week_but_not_older_lapses(hq_url, make_engine):
    eng = make_engine(hq_url)
    put_members(eng.store, [member(1, last_day=D - 14), member(2, last_day=D - 20), member(3, last_day=D - 60),
                            member(4, last_day=D - 13)])
    eng.set_flows(flow("lapsed_days = 14"))
    assert due(eng) == {"M00001": f"lapsed:{D - 14}", "M00002": f"lapsed:{D - 20}"}
