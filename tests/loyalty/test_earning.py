"""Earning rules: visit, spend with cap, items, bonuses in local time, exclusions, tiers."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import JAKARTA

from tillstamp.loyalty.earning import compute_earn, reversal_for_refund
from tillstamp.loyalty.sale import Sale, SaleLine

MONDAY_9 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=JAKARTA)


def sale(*lines: SaleLine, at: dt.datetime = MONDAY_9, discount: int = 0) -> Sale:
    return Sale("R", at, tuple(lines), sum(ln.amount for ln in lines) - discount, discount=discount)


def line(sku="LATTE", qty=1, price=25000, category="coffee", **kw) -> SaleLine:
    return SaleLine(sku, sku.title(), qty, price, category, **kw)


def test_visit_needs_minimum_spend(program):
    assert compute_earn(program, sale(line(price=15000))).stamps == 0
    # Rp 20.000: the visit stamp, not yet a spend stamp.
    assert compute_earn(program, sale(line(price=20000))).stamps == 1


def test_spend_rule_counts_whole_steps_and_caps(program):
    assert compute_earn(program, sale(line(price=49999))).stamps == 1 + 1
    assert compute_earn(program, sale(line(price=50000))).stamps == 1 + 2
    # Rp 1.000.000 would be 40 spend stamps; the cap is 5.
    assert compute_earn(program, sale(line(price=1_000_000))).stamps == 1 + 5


def test_item_rules_by_sku_and_category(program):
    assert compute_earn(program, sale(line("KOPI-SUSU-AREN", qty=3, price=1000))).stamps == 3
    beans = line("GAYO-250", qty=2, price=5000, category="biji-kopi")
    assert compute_earn(program, sale(beans)).stamps == 4


def test_exclusions_earn_nothing(program):
    gift = line("GIFT-100K", price=100000, category="giftcard")
    voucher = line("VOUCHER-50K", price=50000, category="voucher")
    free = line("LATTE", price=50000, paid_with_stamps=True)
    earn = compute_earn(program, sale(gift, voucher, free))
    assert earn.stamps == 0 and earn.eligible == 0


def test_happy_hour_uses_store_local_time(program):
    # 14:30 in Jakarta is 07:30 UTC: happy hour applies (x2).
    at = dt.datetime(2026, 11, 23, 7, 30, tzinfo=dt.UTC)
    assert compute_earn(program, sale(line(price=50000), at=at)).stamps == 6
    # 16:00 local is the end of the window (exclusive).
    at = dt.datetime(2026, 11, 23, 16, 0, tzinfo=JAKARTA)
    assert compute_earn(program, sale(line(price=50000), at=at)).stamps == 3


def test_weekend_bonus_rounds_down(program):
    saturday = dt.datetime(2026, 11, 28, 10, 0, tzinfo=JAKARTA)
    assert compute_earn(program, sale(line(price=25000), at=saturday)).stamps == 3  # floor(2 * 1.5)
    assert compute_earn(program, sale(line(price=50000), at=saturday)).stamps == 4  # floor(3 * 1.5)


def test_tier_multiplier(program):
    gold = program.tier("gold")
    assert compute_earn(program, sale(line(price=100000)), gold).stamps == 7  # floor(5 * 1.5)


def test_discount_lowers_eligible_spend(program):
    assert compute_earn(program, sale(line(price=50000), discount=10000)).stamps == 1 + 1


@given(
    awarded=st.integers(0, 500),
    amounts=st.lists(st.integers(1, 10**6), min_size=1, max_size=6),
)
def test_partial_refunds_add_up_to_a_full_one(awarded, amounts):
    total = sum(amounts)
    back, before = 0, 0
    for a in amounts:
        part = reversal_for_refund(awarded, total, before, a)
        assert part >= 0
        back += part
        before += a
    assert back == awarded


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stamps=st.integers(0, 10**6), bonus=st.fractions(1, 5, max_denominator=100),
       tier=st.fractions(1, 5, max_denominator=100), qty=st.integers(1, 50))
def test_stamps_in_integers_are_the_floor_of_the_fraction(program, stamps, bonus, tier, qty):
    """Earning multiplies in integers; the reference is math.floor of the Fraction product."""
    import dataclasses
    import math

    from tillstamp.loyalty.program import Bonus, ItemRule

    prog = dataclasses.replace(program, visit=None, spend=None, items=(ItemRule(stamps, sku="X"),),
                               bonuses=(Bonus("b", bonus),),
                               tiers=(dataclasses.replace(program.tiers[0], multiplier=tier),))
    earn = compute_earn(prog, sale(line("X", qty=qty)))
    assert earn.base == stamps * qty
    assert earn.multiplier == bonus * tier
    assert earn.stamps == math.floor(earn.base * bonus * tier)
