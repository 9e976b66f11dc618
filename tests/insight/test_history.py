"""Data preparation: rows into a History, cutting at a date, occasions and summaries."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from insight_support import JAKARTA

from tillstamp.insight.btyd import summarize
from tillstamp.insight.history import History, HistoryError, occasions, receipts

T0 = dt.datetime(2026, 3, 2, 8, 30, tzinfo=JAKARTA)  # a Monday


def test_from_rows_encodes_sorted_ids_and_local_fields() -> None:
    rows = [
        ("b", "r1", T0, "kopi", "drinks", 25000),
        ("a", "r2", T0 + dt.timedelta(days=1, hours=14), "gula", None, 12000),
        ("b", "r1", T0, "gula", "", 12000),
    ]
    h = History.from_rows(rows)
    assert h.members == ("a", "b")
    assert h.skus == ("gula", "kopi")
    assert h.categories == ("drinks",)
    assert h.member.tolist() == [1, 0, 1]
    assert h.sku.tolist() == [1, 0, 0]
    assert h.category.tolist() == [0, -1, -1]
    assert h.occasion.tolist() == [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 2)]
    assert h.local_hour.tolist() == [8, 22, 8]
    assert h.weekday.tolist() == [0, 1, 0]
    assert h.receipt[0] == h.receipt[2] != h.receipt[1]
    assert h.amount.dtype == np.int64 and h.amount.tolist() == [25000, 12000, 12000]


def test_local_date_is_the_stores_not_utc() -> None:
    # 23:30 in Jakarta is 16:30 UTC the same day; 01:00 in Jakarta is the previous day in UTC.
    late = dt.datetime(2026, 3, 2, 1, 0, tzinfo=JAKARTA)
    h = History.from_rows([("a", "r", late, "s", "c", 1)])
    assert h.occasion[0] == np.datetime64("2026-03-02")
    assert h.local_hour[0] == 1


def test_rows_must_be_aware_and_integer_money() -> None:
    naive = dt.datetime(2026, 3, 2, 8, 30)
    with pytest.raises(HistoryError, match="aware"):
        History.from_rows([("a", "r", naive, "s", "c", 1)])
    with pytest.raises(HistoryError, match="int"):
        History.from_rows([("a", "r", T0, "s", "c", 1.5)])  # type: ignore[list-item]


def test_arrays_must_agree() -> None:
    h = History.from_rows([("a", "r", T0, "s", "c", 1)])
    with pytest.raises(HistoryError):
        History(
            members=h.members,
            skus=h.skus,
            categories=h.categories,
            member=h.member,
            occasion=h.occasion,
            local_hour=h.local_hour,
            weekday=h.weekday,
            receipt=h.receipt,
            sku=np.array([0, 0], np.int32),
            category=h.category,
            amount=h.amount,
        )


def test_before_cuts_at_the_local_date_and_compacts_codes() -> None:
    rows = [
        ("a", "r1", T0, "s2", "c", 1),
        ("b", "r2", T0 + dt.timedelta(days=2), "s1", "c", 1),
        ("c", "r3", T0 + dt.timedelta(days=1), "s3", "d", 1),
    ]
    h = History.from_rows(rows).before(dt.date(2026, 3, 4))
    assert h.members == ("a", "c")
    assert h.skus == ("s2", "s3")
    assert h.categories == ("c", "d")
    assert h.member.tolist() == [0, 1]
    assert h.sku.tolist() == [0, 1]
    assert len(History.from_rows(rows).before(dt.date(2026, 3, 2))) == 0


def test_store_hours_follow_their_members() -> None:
    pattern = [0.0] * 24
    pattern[19] = 1.0
    rows = [("a", "r1", T0, "s", "c", 1), ("b", "r2", T0, "s", "c", 1)]
    h = History.from_rows(rows, store_hours={"b": pattern})
    assert h.store_hours is not None
    assert np.isnan(h.store_hours[0]).all() and h.store_hours[1][19] == 1.0
    with pytest.raises(HistoryError):
        History.from_rows(rows, store_hours={"a": [1.0] * 23})


def test_occasions_merge_a_members_day() -> None:
    rows = [
        ("a", "r1", T0.replace(hour=18), "s1", "c", 100),
        ("a", "r2", T0.replace(hour=9), "s2", "c", 50),  # same day, second receipt
        ("a", "r3", T0 + dt.timedelta(days=3), "s1", "c", 70),
        ("b", "r4", T0, "s1", "c", 10),
    ]
    h = History.from_rows(rows)
    occ = occasions(h)
    assert occ.member.tolist() == [0, 0, 1]
    assert occ.spend.tolist() == [150, 70, 10]
    assert occ.hour.tolist() == [9, 8, 8]  # the day's first visit
    rm, rh, _ = receipts(h)
    assert sorted(zip(rm.tolist(), rh.tolist(), strict=True)) == [(0, 8), (0, 9), (0, 18), (1, 8)]


def test_summarize_frequency_recency_and_age() -> None:
    days = [0, 7, 21]
    rows = [("a", f"r{d}", T0 + dt.timedelta(days=d), "s", "c", 100 * (d + 1)) for d in days]
    rows.append(("a", "late", T0 + dt.timedelta(days=40), "s", "c", 5))  # after the cut
    rows.append(("b", "rb", T0 + dt.timedelta(days=14), "s", "c", 10))
    occ = occasions(History.from_rows(rows))
    s = summarize(occ, (T0 + dt.timedelta(days=29)).date())  # T runs to day 28
    assert s.x.tolist() == [2.0, 0.0]
    assert s.t_x.tolist() == [3.0, 0.0]
    assert s.T.tolist() == [4.0, 2.0]
    assert s.mean_repeat_spend.tolist() == [(800 + 2200) / 2, 0.0]
    assert s.has_history.tolist() == [True, True]
