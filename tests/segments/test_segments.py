"""The pure part of segments: parsing, the month arithmetic behind expiry, birthdays, RFM cells."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tillstamp.hq.segments import (
    PREDEFINED,
    RFM_CELLS,
    AsOf,
    SegmentError,
    load_segment_text,
    months_before,
    parse_segment,
    rfm_cell,
)
from tillstamp.loyalty.projections import add_months


@given(t=st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2040, 1, 1), timezones=st.just(dt.UTC)),
       s=st.datetimes(dt.datetime(1999, 1, 1), dt.datetime(2040, 1, 1), timezones=st.just(dt.UTC)),
       months=st.integers(1, 36))
def test_months_before_is_the_inverse_of_the_tills_clamped_add(t: dt.datetime, s: dt.datetime, months: int) -> None:
    assert (add_months(s, months) >= t) == (s >= months_before(t, months))


def test_every_rf_pair_is_in_exactly_one_cell() -> None:
    pairs = [p for cell in RFM_CELLS.values() for p in cell]
    assert sorted(pairs) == [(r, f) for r in range(1, 6) for f in range(1, 6)]
    assert rfm_cell(3, 12) == "champions" and rfm_cell(200, 0) == "lost" and rfm_cell(200, 11) == "cant_lose"


def test_feb_29_birthdays_are_kept_on_feb_28_in_common_years() -> None:
    assert "02-29" in AsOf(dt.date(2027, 2, 28)).birthdays(1)
    assert "02-29" not in AsOf(dt.date(2028, 2, 28)).birthdays(1)  # a leap year has its own 29th
    assert AsOf(dt.date(2028, 2, 28)).birthdays(2) == ["02-28", "02-29"]
    assert AsOf(dt.date(2026, 12, 30)).birthdays(4) == ["01-01", "01-02", "12-30", "12-31"]


def test_toml_and_json_definitions_parse_to_the_same_tree() -> None:
    toml = 'name = "x"\n[[all]]\nvisits = { min = 2, within_days = 30 }\n[[all]]\nnot = { consent = "sms" }\n'
    json_text = '{"name": "x", "all": [{"visits": {"min": 2, "within_days": 30}}, {"not": {"consent": "sms"}}]}'
    a, b = parse_segment(load_segment_text(toml)), parse_segment(load_segment_text(json_text))
    assert a == b and a.name == "x"


@pytest.mark.parametrize(("data", "message"), [
    ({"all": [{"visits": {"min": True}}]}, "all[0].visits.min: expected a whole number, got True"),
    ({"all": [{"visits": {"within_days": 3}}]}, "all[0].visits: give min, max or both"),
    ({"spend": {"min": 5, "max": 1}}, "spend: min 5 is above max 1"),
    ({"spend": {"min": 5, "per": 1}}, "spend.per: unknown key"),
    ({"any": {"visits": {"min": 1}}}, "any: expected a list of conditions"),
    ({"consent": "pigeon"}, "consent: expected one of whatsapp, email, sms"),
    ({"birthday_within_days": 0}, "birthday_within_days: must be at least 1"),
    ({"store": []}, "store: expected a non-empty list of text"),
    ({"tier": ["gold", ""]}, "tier[1]: expected non-empty text"),
    ({"name": "Bad Name", "visits": {"min": 1}}, "name: use 1-64 lowercase letters"),
    ({}, "segment: expected exactly one condition, got none"),
])
def test_bad_definitions_name_the_path(data: dict, message: str) -> None:
    with pytest.raises(SegmentError) as e:
        parse_segment(data)
    assert str(e.value).startswith(message)


def test_predefined_segments_are_valid() -> None:
    for name, data in PREDEFINED.items():
        assert parse_segment({"name": name, **data}).root is not None
