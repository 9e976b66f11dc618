"""The history checker catches hand-made bad histories (and passes a good one)."""

from __future__ import annotations

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event

from .checker import History, check
from .conftest import T0


def e(eid: str, stamps: int, seq: int = 1, terminal: str = "A", kind: str = ev.EARNED) -> Event:
    return Event(eid, kind, T0, "M", stamps, None, {}, seq, terminal, "S")


GOOD = History({"A": [e("1", 5), e("2", -3, 2)]}, [e("1", 5), e("2", -3, 2)], {"M": 2}, 10, {"A.acked": [0, 1, 2]})


def test_a_good_history_passes() -> None:
    assert check(GOOD) == []


def test_a_lost_event_is_caught() -> None:
    h = History(GOOD.tills, [e("1", 5)], {"M": 5}, 10)
    assert any("is at HQ 0 times" in x for x in check(h))


def test_a_duplicated_event_is_caught() -> None:
    h = History(GOOD.tills, [*GOOD.hq_events, e("2", -3, 2)], {"M": -1}, 10)
    assert any("at HQ 2 times" in x for x in check(h))


def test_a_wrong_balance_is_caught() -> None:
    h = History(GOOD.tills, GOOD.hq_events, {"M": 3}, 10)
    assert any("!= sum of events" in x for x in check(h))


def test_an_overdraft_beyond_the_bound_is_caught() -> None:
    events = [e("1", 5), e("2", -20, 2), e("x", 15, 1, "HQ", ev.ADJUSTED)]
    h = History({"A": events[:2]}, events, {"M": 0}, 10)
    assert any("beyond the bound" in x for x in check(h))


def test_a_negative_balance_left_unadjusted_is_caught() -> None:
    h = History({"A": [e("1", -5)]}, [e("1", -5)], {"M": -5}, 10)
    assert any("negative balance" in x for x in check(h))


def test_an_invented_event_is_caught() -> None:
    h = History({"A": []}, [e("9", 1)], {"M": 1}, 10)
    assert any("comes from no till" in x for x in check(h))


def test_a_cursor_going_back_is_caught() -> None:
    h = History(GOOD.tills, GOOD.hq_events, {"M": 2}, 10, {"A.acked": [0, 4, 3]})
    assert any("went back" in x for x in check(h))
