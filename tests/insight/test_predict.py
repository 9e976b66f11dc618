"""The entry point: shapes and ranges, and nothing on or after as_of changes a prediction."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from insight_support import JAKARTA, shop_rows

from tillstamp.insight.history import History, Row
from tillstamp.insight.predict import MODEL_VERSION, Predictions, predict

AS_OF = dt.date(2026, 5, 1)
ROWS = shop_rows(n_members=150, days=150, seed=7)


@pytest.fixture(scope="module")
def base() -> Predictions:
    return predict(History.from_rows(ROWS), AS_OF)


def _same(a: Predictions, b: Predictions) -> None:
    assert a.members == b.members
    for name in ("p_alive", "p_visit_14d", "expected_visits_30d"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("value_12m", "next_visit", "best_hour", "best_weekday"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.skus == b.skus
    assert a.categories == b.categories
    assert a.reorder == b.reorder
    assert a.model_params == b.model_params


def test_predictions_have_the_promised_shape(base: Predictions) -> None:
    p = base
    before = {r[0] for r in ROWS if r[2].date() < AS_OF}
    assert set(p.members) == before
    assert p.model_version == MODEL_VERSION
    bg = p.model_params["bgnbd"]
    assert set(bg) == {"r", "alpha", "a", "b", "ll", "unit"} and bg["unit"] == "week"
    assert set(p.model_params["gamma_gamma"]) == {"p", "q", "gamma"}
    assert p.model_params["p_visit_14d"]["model"] == "logistic"
    assert p.model_params["expected_visits_30d"]["model"] == "poisson"
    for m in p:
        assert 0 <= m.p_alive <= 1 and 0 <= m.p_visit_14d <= 1
        assert m.expected_visits_30d >= 0 and isinstance(m.value_12m, int) and m.value_12m >= 0
        assert m.next_visit >= AS_OF
        assert 0 <= m.best_hour <= 23 and 0 <= m.best_weekday <= 6
        assert 0 < len(m.skus) <= 10 and len(set(m.skus)) == len(m.skus)
        assert 0 < len(m.categories) <= 10
        assert all(due >= AS_OF for _, due in m.reorder)
        assert [d for _, d in m.reorder] == sorted(d for _, d in m.reorder)
    one = p.for_member(p.members[3])
    assert one == p[3]
    with pytest.raises(KeyError):
        p.for_member("nobody")


def test_predictions_follow_behaviour(base: Predictions) -> None:
    # Each member's own favourite SKU (their most bought before as_of) is among their top 10.
    counts: dict[str, dict[str, int]] = {}
    for member, _, at, sku, _, _ in ROWS:
        if at.date() < AS_OF:
            counts.setdefault(member, {}).setdefault(sku, 0)
            counts[member][sku] += 1
    hits = [max(c, key=c.__getitem__) in base.for_member(m).skus for m, c in counts.items()]
    assert np.mean(hits) > 0.9
    # Frequent visitors are expected back more often than rare ones.
    fast = base.expected_visits_30d > np.quantile(base.expected_visits_30d, 0.8)
    assert base.p_visit_14d[fast].mean() > base.p_visit_14d[~fast].mean()


def test_rows_in_any_order_give_the_same_predictions(base: Predictions) -> None:
    shuffled = [ROWS[i] for i in np.random.default_rng(0).permutation(len(ROWS))]
    _same(base, predict(History.from_rows(shuffled), AS_OF))


later_rows = st.lists(
    st.tuples(
        st.sampled_from(["m0001", "m0002", "m0100", "zz-new", "a-new"]),
        st.integers(0, 60),  # days on or after as_of
        st.integers(0, 23),
        st.sampled_from(["sku1", "sku3", "brand-new-sku", "0-first"]),
        st.sampled_from(["cat1", "new-cat", None]),
        st.integers(0, 10**7),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(later=later_rows)
def test_nothing_on_or_after_as_of_changes_a_prediction(
    base: Predictions, later: list[tuple[str, int, int, str, str | None, int]]
) -> None:
    start = dt.datetime.combine(AS_OF, dt.time(0, 0), tzinfo=JAKARTA)
    extra: list[Row] = [
        (m, f"later-{i}", start + dt.timedelta(days=d, hours=h), s, c, a)
        for i, (m, d, h, s, c, a) in enumerate(later)
    ]
    _same(base, predict(History.from_rows(ROWS + extra), AS_OF))


def test_a_short_history_falls_back_to_bgnbd() -> None:
    rows = shop_rows(n_members=40, days=25, seed=4)
    p = predict(History.from_rows(rows), dt.date(2026, 1, 20))
    assert p.model_params["p_visit_14d"] == {"model": "bgnbd"}
    assert ((p.p_visit_14d >= 0) & (p.p_visit_14d <= 1)).all()


def test_an_empty_history_predicts_nothing() -> None:
    p = predict(History.from_rows([]), AS_OF)
    assert len(p) == 0 and list(p) == []


def test_a_history_too_thin_to_fit_gives_numbers_not_nan() -> None:
    """Nobody came twice: the fits sit at a boundary, and every stored figure is still a number."""
    import datetime as dt

    import numpy as np

    from tillstamp.insight.history import History
    from tillstamp.insight.predict import predict

    zone = dt.timezone(dt.timedelta(hours=7))
    rows = [("C-1", "R-1", dt.datetime(2026, 10, 20, 9, 15, tzinfo=zone), "KOPI", "coffee", 50000),
            ("C-1", "R-1", dt.datetime(2026, 10, 20, 9, 15, tzinfo=zone), "CRO", None, 22000),
            ("C-2", "R-2", dt.datetime(2026, 10, 21, 10, 0, tzinfo=zone), "KOPI", "coffee", 25000)]
    p = predict(History.from_rows(rows), dt.date(2026, 11, 1))
    for name in ("p_alive", "p_visit_14d", "expected_visits_30d"):
        assert np.isfinite(getattr(p, name)).all(), name
    assert (p.value_12m >= 0).all()
