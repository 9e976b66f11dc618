"""The next-basket attempts script: its variants do what they say and leave the library as
it was."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import tillstamp.insight.basket as B

# Loaded from its file rather than by putting benchmarks/ on sys.path, where its scripts'
# names (run, gen_crm, ...) could shadow other modules for the rest of the test session.
_spec = importlib.util.spec_from_file_location(
    "basket_validation",
    Path(__file__).resolve().parents[2] / "benchmarks" / "basket_validation.py",
)
assert _spec is not None and _spec.loader is not None
V = importlib.util.module_from_spec(_spec)
sys.modules["basket_validation"] = V  # dataclasses look their module up there
_spec.loader.exec_module(V)

D0 = np.datetime64("2026-01-01", "D")


def lines(n: int, quantity: list[int] | None = None) -> V.Lines:
    q = np.asarray(quantity if quantity is not None else [1] * n)
    z = np.zeros(n, np.int64)
    promo = {k: np.zeros(0, np.int64) for k in ("week", "store", "item")}
    promo |= {"display": np.zeros(0, bool), "mailer": np.zeros(0, bool)}
    return V.Lines(quantity=q, store=z, amount=np.full(n, 1000), promo=promo)


def test_applied_puts_the_library_back_even_after_an_error() -> None:
    before = (B.candidates, B._top_per_member, B._first_basket_labels, B._ndcg)
    with pytest.raises(RuntimeError), V.applied(V.Attempt(diversity=1.0), lines(0), None):
        assert B.candidates is not before[0]
        raise RuntimeError("boom")
    assert (B.candidates, B._top_per_member, B._first_basket_labels, B._ndcg) == before


def test_diversity_moves_a_second_sku_of_a_category_down() -> None:
    # One member, candidates 0 and 1 in category 0 score highest, 2 in category 1 next.
    c = B.Candidates(
        member=np.zeros(3, np.int64),
        item=np.array([0, 1, 2]),
        slot=np.array([0, 1, 2]),
        width=3,
        X=np.zeros((3, len(B.RANKER_FEATURES)), np.float32),
    )
    score = np.array([3.0, 2.5, 2.0])
    group = np.array([0, 0, 1])
    with V.applied(V.Attempt(), lines(0), group):
        plain, _ = B._top_per_member(c, score, 1, 3)
    with V.applied(V.Attempt(diversity=1.0), lines(0), group):
        diverse, rows = B._top_per_member(c, score, 1, 3)
    assert plain[0].tolist() == [0, 1, 2]
    # 2.5 - 1.0 < 2.0: the other category's SKU comes before the second of category 0.
    assert diverse[0].tolist() == [0, 2, 1]
    assert rows[0].tolist() == [0, 2, 1]


def test_quantity_due_ratio_counts_the_units_bought_last() -> None:
    # Items 0 and 1 are each bought 1 unit on days 0, 10, 20, then on day 30: item 0 one unit,
    # item 1 three. On day 40 item 0 is due (10 days a unit), item 1 lasts until day 60.
    member = np.zeros(8, np.int32)
    day = D0 + np.array([0, 10, 20, 30, 0, 10, 20, 30])
    item = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int32)
    q = [1, 1, 1, 1, 1, 1, 1, 3]
    cut = D0 + 40
    c = B.candidates(member, day, item, 1, 2, cut, popular=0)
    cols = V.extra_columns(("qty",), lines(8, q), member, day, item, 1, 2, cut, c)
    due = dict(zip(c.item.tolist(), cols["qty_due"].tolist(), strict=True))
    assert due[0] == pytest.approx(np.log(11 / 11))
    assert due[1] == pytest.approx(np.log(11 / 31))
