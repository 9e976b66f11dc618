"""Reorder due, best time, next basket and the revisit model on small hand-made arrays."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from insight_support import shop_rows
from scipy import optimize

from tillstamp.insight.basket import (
    BLENDS,
    RANKER_FEATURES,
    NextBasket,
    RepeatRanker,
    _blend,
    _Labelled,
    _ndcg,
    basket_vectors,
    candidates,
    top_k,
)
from tillstamp.insight.history import History, occasions
from tillstamp.insight.reorder import ReorderDue
from tillstamp.insight.revisit import (
    Logistic,
    NotEnoughHistory,
    Poisson,
    RevisitModel,
    VisitCountModel,
    visit_features,
)
from tillstamp.insight.timing import BestTime

D0 = np.datetime64("2026-01-01", "D")


def days(*offsets: int) -> np.ndarray:
    return D0 + np.array(offsets, dtype=np.int64)


def test_reorder_due_is_last_plus_shrunk_median_gap() -> None:
    # Member 0 buys coffee (category 0) every 21 days; member 1 every 7 days.
    member = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1], np.int32)
    day = days(0, 21, 42, 63, 0, 7, 14, 21, 28)
    cat = np.zeros(9, np.int32)
    as_of = dt.date(2026, 3, 10)  # day 68
    due = ReorderDue(prior_weight=0.0).fit_predict(member, day, cat, 1, as_of)
    got = dict(zip(due.member.tolist(), due.due.tolist(), strict=True))
    assert got[0] == dt.date(2026, 3, 26)  # day 63 + 21 = day 84
    assert got[1] == as_of  # day 28 + 7 is long past: due now
    shrunk = ReorderDue(prior_weight=3.0).fit_predict(member, day, cat, 1, as_of)
    # The category's median gap over both members is 7 (4 gaps of 7 against 3 of 21).
    gap = dict(zip(shrunk.member.tolist(), shrunk.gap_days.tolist(), strict=True))
    assert gap[0] == pytest.approx((3 * 21 + 3 * 7) / 6)


def test_reorder_needs_three_dates_and_ignores_later_lines() -> None:
    member = np.array([0, 0, 0, 0], np.int32)
    day = days(0, 10, 10, 90)  # two distinct dates before the cut, one after
    cat = np.zeros(4, np.int32)
    due = ReorderDue().fit_predict(member, day, cat, 1, dt.date(2026, 2, 1))
    assert len(due.member) == 0


def test_best_hour_follows_own_visits_then_the_store() -> None:
    # Member 0: twenty evening visits. Member 1: one 3 am visit. Everyone else: mornings.
    member = np.r_[np.zeros(20), [1], np.full(200, 2)].astype(np.int32)
    hour = np.r_[np.full(20, 19), [3], np.full(200, 9)].astype(np.int64)
    weekday = np.r_[np.full(20, 4), [6], np.full(200, 1)].astype(np.int64)
    best_hour, best_day = BestTime(prior_weight=3.0).fit_predict(member, hour, weekday, 3)
    assert best_hour.tolist() == [19, 9, 9]
    assert best_day.tolist() == [4, 1, 1]
    store = np.full((3, 24), np.nan)
    store[1] = 0.0
    store[1, 12] = 1.0
    best_hour, _ = BestTime(prior_weight=3.0).fit_predict(member, hour, weekday, 3, store)
    assert best_hour[1] == 12


def test_best_hour_takes_the_densest_window() -> None:
    # 18 and 20 together outweigh a single peak at 8.
    member = np.zeros(10, np.int32)
    hour = np.array([8, 8, 8, 8, 18, 18, 18, 20, 20, 20])
    best_hour, _ = BestTime(prior_weight=0.0).fit_predict(member, hour, np.zeros(10, int), 1)
    assert best_hour[0] == 19


def test_basket_vectors_decay_by_basket() -> None:
    member = np.array([0, 0, 0, 0], np.int32)
    day = days(0, 0, 1, 2)
    item = np.array([0, 0, 1, 0], np.int32)  # item 0 twice in one basket counts once
    v = basket_vectors(member, day, item, 1, 2, decay=0.5).toarray()[0]
    norm = 1 + 0.5 + 0.25
    assert v == pytest.approx([(1 + 0.25) / norm, 0.5 / norm])


def test_top_k_is_ordered_with_ties_by_index() -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.0, 0.9]])
    assert top_k(scores, 3).tolist() == [[4, 1, 2]]


def test_next_basket_repeats_own_items_and_fills_from_neighbours() -> None:
    # Members 0-3 buy items 0,1,2 and 5; member 4 buys 0,1,2 only. Item 9 is bought by 5 alone.
    rows = [(m, d, i) for m in range(4) for d in range(3) for i in (0, 1, 2, 5)]
    rows += [(4, d, i) for d in range(3) for i in (0, 1, 2)]
    rows += [(5, 0, 9)]
    member, day, item = (np.array(c) for c in zip(*rows, strict=True))
    nb = NextBasket(neighbours=2, alpha=0.7).fit(member, D0 + day, item, 7, 10)
    rec = nb.recommend(4)
    assert set(rec[4, :3].tolist()) == {0, 1, 2}
    assert rec[4, 3] == 5  # from the neighbours, not the lone item 9
    assert rec[5, 0] == 9
    # Member 6 bought nothing: popular items.
    assert set(rec[6, :4].tolist()) == {0, 1, 2, 5}


def test_logistic_recovers_a_known_direction() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3)) * [1.0, 5.0, 1.0] + [0.0, 10.0, 0.0]
    z = 1.5 * X[:, 0] - 0.4 * (X[:, 1] - 10)
    y = rng.random(3000) < 1 / (1 + np.exp(-z))
    m = Logistic(l2=1e-6).fit(X, y)
    w = m.coef_ / m.scale_
    assert w[0] == pytest.approx(1.5, rel=0.15)
    assert w[1] == pytest.approx(-0.4, rel=0.15)
    assert abs(w[2]) < 0.15
    stronger = Logistic(l2=1.0).fit(X, y)
    assert np.abs(stronger.coef_).sum() < np.abs(m.coef_).sum()


@pytest.mark.parametrize("solver", ["bfgs", "newton"])
def test_logistic_gradient(solver: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 2))
    y = (rng.random(200) < 0.3).astype(float)
    m = Logistic(l2=0.1, solver=solver).fit(X, y)
    # At the optimum the penalised gradient vanishes.
    Z = (X - m.mean_) / m.scale_

    def loss(theta: np.ndarray) -> float:
        z = Z @ theta[:2] + theta[2]
        return float((np.logaddexp(0, z) - y * z).mean() + 0.1 * theta[:2] @ theta[:2])

    grad = optimize.approx_fprime(np.r_[m.coef_, m.intercept_], loss, 1e-7)
    assert np.abs(grad).max() < 1e-4


def test_logistic_newton_finds_the_bfgs_optimum_with_weights() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(5000, 6)).astype(np.float32)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(X[:, 0] - 2.0)))).astype(float)
    w = rng.random(5000)
    a = Logistic(1e-3).fit(X, y, sample_weight=w)
    b = Logistic(1e-3, solver="newton").fit(X, y, sample_weight=w)
    np.testing.assert_allclose(b.coef_, a.coef_, atol=1e-4)
    assert b.intercept_ == pytest.approx(a.intercept_, abs=1e-4)
    with pytest.raises(ValueError, match="solver"):
        Logistic(solver="sgd")


def test_revisit_model_ranks_frequent_members_higher() -> None:
    h = History.from_rows(shop_rows(n_members=150, days=120, seed=2))
    occ = occasions(h)
    as_of = dt.date(2026, 4, 20)
    model = RevisitModel().fit(occ, as_of)
    assert model.chosen_ in ("recency", "rfm", "full", "full+bgnbd")
    assert set(model.validation_) >= {"recency@0.0001", "full@0.01"}
    f = visit_features(occ, as_of)
    p = model.predict(f)
    assert ((p >= 0) & (p <= 1)).all()
    freq = f.select(("log_frequency",))[:, 0]
    top, bottom = freq >= np.quantile(freq, 0.8), freq <= np.quantile(freq, 0.2)
    assert p[top].mean() > p[bottom].mean() + 0.2


def test_revisit_model_refuses_a_short_history() -> None:
    h = History.from_rows(shop_rows(n_members=30, days=20, seed=3))
    with pytest.raises(NotEnoughHistory):
        RevisitModel().fit(occasions(h), dt.date(2026, 1, 15))


def test_candidates_features_are_from_before_the_cut() -> None:
    # Member 0 buys item 1 on days 0, 7, 14 and item 2 on day 14; item 3 only after the cut.
    # Member 1 buys item 4 once.
    member = np.array([0, 0, 0, 0, 0, 1], np.int32)
    day = days(0, 7, 14, 14, 30, 3)
    item = np.array([1, 1, 1, 2, 3, 4], np.int32)
    c = candidates(member, day, item, 2, 5, D0 + 20, per_member=10, popular=5)
    mine = c.member == 0
    got = {int(i): row for i, row in zip(c.item[mine], c.X[mine], strict=True)}
    # Own items 1 and 2, popular item 4; never 3 (bought after the cut) nor 0 (never bought).
    assert set(got) == {1, 2, 4}
    col = RANKER_FEATURES.index
    assert got[1][col("log_count")] == pytest.approx(np.log1p(3))
    assert got[1][col("share")] == pytest.approx(1.0)
    assert got[2][col("share")] == pytest.approx(1 / 3)
    assert got[1][col("log_days_since")] == pytest.approx(np.log1p(6))
    assert got[1][col("owned")] == 1.0 and got[4][col("owned")] == 0.0


def test_candidates_know_the_repeat_cycle_in_days_and_the_group() -> None:
    # Member 0 buys item 1 every 7 days (days 0, 7, 14) and item 2 (group 0, like item 1) on
    # day 14; item 3 (group 1) once on day 2. Lines after the cut (day 30) must not count.
    member = np.array([0, 0, 0, 0, 0, 0, 0], np.int32)
    day = days(0, 7, 14, 14, 2, 30, 30)
    item = np.array([1, 1, 1, 2, 3, 1, 3], np.int32)
    group = np.array([-1, 0, 0, 1, -1])
    c = candidates(member, day, item, 1, 5, D0 + 20, per_member=10, popular=0, group=group)
    got = {int(i): row for i, row in zip(c.item, c.X, strict=True)}
    col = RANKER_FEATURES.index
    # Item 1: 6 days since, a 7-day cycle: log((6 + 1) / (7 + 1)).
    assert got[1][col("log_days_due_ratio")] == pytest.approx(np.log(7 / 8), rel=1e-5)
    assert got[1][col("log_item_gap_days")] == pytest.approx(np.log1p(7), rel=1e-5)
    assert got[1][col("in_last_basket")] == 1.0 and got[3][col("in_last_basket")] == 0.0
    # Baskets on days 0, 2, 7, 14: the member's gap is 14 / 3 days; 6 days since the last.
    assert got[1][col("log_member_gap_days")] == pytest.approx(np.log1p(14 / 3), rel=1e-5)
    assert got[1][col("log_member_recency_days")] == pytest.approx(np.log1p(6), rel=1e-5)
    # Group 0 was in the baskets of days 0, 7, 14 (j = 3, 1, 0 back from the last).
    norm = 1 + 0.9 + 0.9**2 + 0.9**3
    g0 = (1 + 0.9 + 0.9**3) / norm
    assert got[1][col("group_decay_90")] == pytest.approx(g0, rel=1e-5)
    assert got[2][col("group_decay_90")] == pytest.approx(g0, rel=1e-5)
    assert got[3][col("group_decay_90")] == pytest.approx(0.9**2 / norm, rel=1e-5)
    # Own history with decay 0.95 is the baseline's score exactly.
    v = basket_vectors(member[:5], day[:5], item[:5], 1, 5, decay=0.95).toarray()[0]
    for i in (1, 2, 3):
        assert got[i][col("decay_95")] == pytest.approx(v[i], rel=1e-5)


def test_candidates_know_the_hazard_of_each_item_from_its_own_gaps() -> None:
    # Item 1 every 7 days (0, 7, 14), item 4 on days 0 and 14, item 2 once (day 14), item 3
    # on day 2; the cut is day 20, so 6 days since items 1, 2 and 4. Baskets on days 0, 2,
    # 7, 14: the member's mean gap, the horizon of the next visit, is 14 / 3 days.
    member = np.zeros(8, np.int32)
    day = days(0, 7, 14, 14, 2, 0, 14, 30)
    item = np.array([1, 1, 1, 2, 3, 4, 4, 4], np.int32)
    c = candidates(member, day, item, 1, 5, D0 + 20, per_member=10, popular=0)
    got = {int(i): row for i, row in zip(c.item, c.X, strict=True)}
    col = RANKER_FEATURES.index
    # Item 1: both gaps (7, 7) are longer than the 6 days so far, and both end within the
    # next 14 / 3 days: (2 - 0 + 0.3) / (2 + 1).
    assert got[1][col("hazard_next_visit")] == pytest.approx(2.3 / 3, rel=1e-5)
    assert got[1][col("log_item_gaps")] == pytest.approx(np.log(3), rel=1e-5)
    assert got[1][col("share_gaps_longer")] == pytest.approx(2.5 / 3, rel=1e-5)
    # Item 4's one gap (14 days) is longer than 6 and does not end within 14 / 3 days more.
    assert got[4][col("hazard_next_visit")] == pytest.approx(0.3 / 2, rel=1e-5)
    # Bought once: no gaps, no hazard (the later line of day 30 does not count).
    assert got[2][col("hazard_next_visit")] == 0.0 and got[2][col("log_item_gaps")] == 0.0


def test_candidates_expect_the_next_basket_type() -> None:
    # A big shop (items 1-4) on days 0, 7, 14 and a small top-up (item 5) on days 3, 10, 17:
    # the last basket was small and a small one was always followed by a big one, so the
    # next is expected big: item 1 gains on its share of all baskets and item 5 loses.
    rows = [(d, i) for d in (0, 7, 14) for i in (1, 2, 3, 4)] + [(d, 5) for d in (3, 10, 17)]
    day = D0 + np.array([d for d, _ in rows])
    item = np.array([i for _, i in rows], np.int32)
    member = np.zeros(len(rows), np.int32)
    c = candidates(member, day, item, 2, 7, D0 + 20, per_member=10, popular=0)
    got = {int(i): row for i, row in zip(c.item, c.X, strict=True)}
    col = RANKER_FEATURES.index
    assert got[1][col("log_next_type_ratio")] > 0 > got[5][col("log_next_type_ratio")]
    assert got[1][col("next_type_share")] > got[5][col("next_type_share")]
    # Products of item and member features are what they say.
    for row in got.values():
        assert row[col("owned_x_member_repeat")] == pytest.approx(
            row[col("owned")] * row[col("member_repeat_share")]
        )
        assert row[col("decay_95_x_log_member_baskets")] == pytest.approx(
            row[col("decay_95")] * row[col("log_member_baskets")]
        )


def test_blend_zero_is_the_ranker_and_one_is_own_history() -> None:
    X = np.zeros((3, len(RANKER_FEATURES)), np.float32)
    X[:, RANKER_FEATURES.index("decay_95")] = [0.2, 0.5, 0.0]
    p = np.array([0.9, 0.1, 0.5])
    assert np.argsort(-_blend(p, X, 0.0)).tolist() == [0, 2, 1]
    assert np.argsort(-_blend(p, X, 1.0))[:2].tolist() == [1, 0]


def test_validation_ndcg_counts_items_outside_the_candidates() -> None:
    # Member 0's basket has 2 items; one (item 5) is a candidate, ranked second of two.
    c = candidates(
        np.array([0, 0, 0], np.int32), days(0, 0, 1), np.array([4, 5, 4], np.int32), 1, 9,
        D0 + 5, per_member=10, popular=0,
    )
    y = (c.item == 5).astype(np.float64)
    w = np.full(len(c.item), 0.5)
    score = np.where(c.item == 4, 1.0, 0.0)
    got = _ndcg(_Labelled(c, y, w), score, 1, 10)
    assert got == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))


def test_repeat_ranker_chooses_its_blend_before_as_of() -> None:
    rng = np.random.default_rng(8)
    rows = []
    for m in range(200):
        staples = rng.choice(30, 3, replace=False)
        for d in range(0, 150, 4):
            rows += [(m, d, s) for s in staples if rng.random() < 0.7]
            rows.append((m, d, int(rng.integers(30, 300))))
    member, day, item = (np.array(c) for c in zip(*rows, strict=True))
    as_of = (D0 + 150).astype(dt.date)
    r = RepeatRanker()
    rec = r.fit_recommend(member, D0 + day, item, 200, 300, as_of)
    assert set(r.validation_) == set(BLENDS) and r.blend_ in BLENDS
    assert r.validation_[r.blend_] == max(r.validation_.values())
    # Lines on and after as_of change neither the choice nor the lists.
    later = (np.r_[member, 0, 1], np.r_[D0 + day, D0 + 150, D0 + 160], np.r_[item, 299, 299])
    r2 = RepeatRanker()
    np.testing.assert_array_equal(r2.fit_recommend(*later, 200, 300, as_of), rec)
    assert r2.validation_ == r.validation_
    # With a single blend of 0 the ranker alone decides.
    only = RepeatRanker(blends=(0.0,))
    only.fit_recommend(member, D0 + day, item, 200, 300, as_of)
    assert only.blend_ == 0.0


def test_repeat_ranker_without_a_validation_basket_blends_nothing() -> None:
    # Visits end on day 100; as_of is day 140, so nobody shops in [as_of - 28, as_of).
    rng = np.random.default_rng(9)
    rows = [(m, d, int(s)) for m in range(60) for d in range(0, 101, 3) for s in rng.choice(20, 2)]
    member, day, item = (np.array(c) for c in zip(*rows, strict=True))
    r = RepeatRanker()
    rec = r.fit_recommend(member, D0 + day, item, 60, 20, (D0 + 140).astype(dt.date))
    assert r.blend_ == 0.0 and r.validation_ == {}  # no NaN for the stored parameters
    assert (rec[:, 0] >= 0).all()


def test_repeat_ranker_puts_staples_first() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for m in range(300):
        staples = rng.choice(50, 3, replace=False)
        for d in range(0, 150, 5):
            for s in staples:
                if rng.random() < 0.8:
                    rows.append((m, d, s))
            rows.append((m, d, int(rng.integers(50, 400))))  # one-off items
    member, day, item = (np.array(c) for c in zip(*rows, strict=True))
    rec = RepeatRanker().fit_recommend(member, D0 + day, item, 300, 400, (D0 + 150).astype(dt.date))
    assert rec.shape == (300, 10)
    staples_first = [set(rec[m, :3].tolist()) <= set(range(50)) for m in range(300)]
    assert np.mean(staples_first) > 0.95
    assert all(len(set(r.tolist()) - {-1}) == (r >= 0).sum() for r in rec)


def test_poisson_regression_recovers_rates() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(4000, 2))
    y = rng.poisson(np.exp(0.5 + 0.8 * X[:, 0]))
    m = Poisson(l2=1e-6).fit(X, y)
    w = m.coef_ / m.scale_
    assert w[0] == pytest.approx(0.8, abs=0.06)
    assert abs(w[1]) < 0.06
    assert m.predict_proba(X).mean() == pytest.approx(y.mean(), rel=0.02)


def test_visit_count_model_predicts_more_for_frequent_members() -> None:
    h = History.from_rows(shop_rows(n_members=150, days=120, seed=2))
    occ = occasions(h)
    as_of = dt.date(2026, 4, 20)
    model = VisitCountModel().fit(occ, as_of)
    f = visit_features(occ, as_of, 30)
    e = model.predict(f)
    assert (e >= 0).all()
    freq = f.select(("log_frequency",))[:, 0]
    assert e[freq >= np.quantile(freq, 0.8)].mean() > 2 * e[freq <= np.quantile(freq, 0.2)].mean()
