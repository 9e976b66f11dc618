"""BG/NBD and Gamma-Gamma: the paper's CDNOW figures, the gradient, and lifetimes where it installs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from insight_support import cdnow_history, data_dir, require
from scipy import optimize

from tillstamp.insight.btyd import (
    BetaGeo,
    GammaGamma,
    Summary,
    _bgnbd_ll_grad,
    bgnbd_log_likelihood,
    summarize,
)
from tillstamp.insight.history import occasions

CALIBRATION_END = dt.date(1997, 10, 1)  # the day after 1997-09-30: T runs to 1997-09-30


@pytest.fixture(scope="module")
def cdnow_summary() -> Summary:
    path = require(data_dir() / "cdnow" / "CDNOW_sample.txt")
    return summarize(occasions(cdnow_history(path)), CALIBRATION_END)


def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow_summary: Summary) -> None:
    s = cdnow_summary
    assert int(s.has_history.sum()) == 2357
    bg = BetaGeo().fit(s.x, s.t_x, s.T)
    assert round(bg.r_, 3) == 0.243
    assert round(bg.alpha_, 3) == 4.414
    assert round(bg.a_, 3) == 0.793
    assert round(bg.b_, 3) == 2.426
    assert round(bg.ll_, 1) == -9582.4


def test_gamma_gamma_reproduces_fader_hardie_2013(cdnow_summary: Summary) -> None:
    s = cdnow_summary
    assert int((s.x > 0).sum()) == 946
    gg = GammaGamma().fit(s.x, s.mean_repeat_spend / 100)  # cents back to dollars
    assert round(gg.p_, 2) == 6.25
    assert round(gg.q_, 2) == 3.74
    assert round(gg.gamma_, 2) == 15.44
    # The scale parameter follows the unit of money.
    gg_cents = GammaGamma().fit(s.x, s.mean_repeat_spend)
    assert gg_cents.gamma_ == pytest.approx(gg.gamma_ * 100, rel=1e-4)


def test_bgnbd_predictions_on_cdnow(cdnow_summary: Summary) -> None:
    s = cdnow_summary
    bg = BetaGeo().fit(s.x, s.t_x, s.T)
    alive = bg.p_alive(s.x, s.t_x, s.T)
    assert np.all((alive > 0) & (alive <= 1))
    assert np.all(alive[s.x == 0] == 1.0)
    # The paper's figure 3: the 39-week holdout total is about 1,788 against 1,359 observed
    # calibration repeats; the expected sum over all customers is in that region.
    total = bg.expected_visits(39.0, s.x, s.t_x, s.T).sum()
    assert 1500 < total < 1900
    p_any = bg.p_any_visit(4.0, s.x, s.t_x, s.T)
    assert np.all((p_any >= 0) & (p_any <= alive))
    # More time can only add visits.
    assert np.all(
        bg.expected_visits(8.0, s.x, s.t_x, s.T) >= bg.expected_visits(4.0, s.x, s.t_x, s.T)
    )


def test_bgnbd_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 8, 50).astype(float)
    T = rng.uniform(1, 40, 50)
    t_x = np.where(x > 0, rng.uniform(0, 1, 50) * T, 0.0)
    theta = np.array([0.7, 3.0, 0.9, 2.2])

    def f(th: np.ndarray) -> float:
        return float(_bgnbd_ll_grad(th, x, t_x, T, grad=False)[0].sum())

    def g(th: np.ndarray) -> np.ndarray:
        grad = _bgnbd_ll_grad(th, x, t_x, T)[1]
        assert grad is not None
        return grad.sum(axis=1)

    assert optimize.check_grad(f, g, theta) < 1e-4 * np.abs(g(theta)).max()


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(0, 300),
    frac=st.floats(0, 1),
    T=st.floats(0, 500),
    r=st.floats(0.01, 50),
    alpha=st.floats(0.01, 500),
    a=st.floats(0.01, 50),
    b=st.floats(0.01, 50),
)
def test_bgnbd_likelihood_and_p_alive_are_finite(
    x: int, frac: float, T: float, r: float, alpha: float, a: float, b: float
) -> None:
    t_x = frac * T if x > 0 else 0.0
    xs, ts, Ts = np.array([float(x)]), np.array([t_x]), np.array([T])
    ll = bgnbd_log_likelihood((r, alpha, a, b), xs, ts, Ts)
    assert np.isfinite(ll).all()
    if x == 0:  # then it is a probability, not a density in t_x
        assert (ll <= 1e-9).all()
    bg = BetaGeo()
    bg.r_, bg.alpha_, bg.a_, bg.b_ = r, alpha, a, b
    alive = bg.p_alive(xs, ts, Ts)
    assert ((alive >= 0) & (alive <= 1)).all()
    p_any = bg.p_any_visit(2.0, xs, ts, Ts)
    assert ((p_any >= 0) & (p_any <= 1)).all()


def test_bgnbd_recovers_simulated_parameters() -> None:
    rng = np.random.default_rng(11)
    n, horizon = 4000, 52.0
    r, alpha, a, b = 0.8, 4.0, 1.2, 3.0
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > horizon:
                break
            x[i] += 1
            t_x[i] = t
            if rng.random() < p[i]:
                break
    bg = BetaGeo().fit(x, t_x, np.full(n, horizon))
    assert bg.r_ == pytest.approx(r, rel=0.2)
    assert bg.alpha_ == pytest.approx(alpha, rel=0.3)
    assert bg.a_ / (bg.a_ + bg.b_) == pytest.approx(a / (a + b), abs=0.06)


def test_matches_lifetimes_when_installed(cdnow_summary: Summary) -> None:
    lifetimes = pytest.importorskip("lifetimes", reason="lifetimes is not installed")
    s = cdnow_summary
    ours = BetaGeo().fit(s.x, s.t_x, s.T)
    theirs = lifetimes.BetaGeoFitter().fit(s.x, s.t_x, s.T)
    for name, value in zip(("r", "alpha", "a", "b"), ours.params, strict=True):
        assert value == pytest.approx(float(theirs.params_[name]), rel=2e-3)
    ref = theirs.conditional_probability_alive(s.x, s.t_x, s.T)
    assert ours.p_alive(s.x, s.t_x, s.T) == pytest.approx(np.asarray(ref), abs=2e-3)
    ref_e = theirs.conditional_expected_number_of_purchases_up_to_time(10.0, s.x, s.t_x, s.T)
    assert ours.expected_visits(10.0, s.x, s.t_x, s.T) == pytest.approx(np.asarray(ref_e), abs=5e-3)
    rep = s.x > 0
    gg = GammaGamma().fit(s.x, s.mean_repeat_spend / 100)
    gg_ref = lifetimes.GammaGammaFitter().fit(s.x[rep], s.mean_repeat_spend[rep] / 100)
    assert gg.p_ == pytest.approx(float(gg_ref.params_["p"]), rel=5e-3)
    spend = gg.expected_spend(s.x[rep], s.mean_repeat_spend[rep] / 100)
    ref_spend = gg_ref.conditional_expected_average_profit(s.x[rep], s.mean_repeat_spend[rep] / 100)
    assert spend == pytest.approx(np.asarray(ref_spend), rel=5e-3)
