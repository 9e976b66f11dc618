"""Buy-till-you-die models: BG/NBD for the number of visits, Gamma-Gamma for spend per visit.

References:
- P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "Counting Your Customers the Easy Way: An
  Alternative to the Pareto/NBD Model", Marketing Science 24(2), 275-284.
- P. S. Fader, B. G. S. Hardie (2013), "The Gamma-Gamma Model of Monetary Value" (note).
- P. S. Fader, B. G. S. Hardie, K. L. Lee (2005), "RFM and CLV: Using Iso-Value Curves for
  Customer Base Analysis", Journal of Marketing Research 42(4), 415-430.

The likelihoods are written out here (and the BG/NBD gradient by hand) because no maintained
buy-till-you-die library is light enough to ship in head office; `lifetimes` agrees with them
in the tests where it installs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from tillstamp.insight.history import Occasions

__all__ = ["BetaGeo", "GammaGamma", "Summary", "bgnbd_log_likelihood", "summarize"]

WEEK = 7.0


@dataclass(frozen=True, eq=False)
class Summary:
    """Per-member recency/frequency/monetary summary of occasions before a cut-off."""

    x: np.ndarray  # repeat occasions (occasions - 1)
    t_x: np.ndarray  # time from first to last occasion, in `unit_days`
    T: np.ndarray  # time from first occasion to the day before the cut-off, in `unit_days`
    mean_repeat_spend: np.ndarray  # mean spend of the repeat occasions (0 where x == 0)
    first: np.ndarray  # datetime64[D]
    last: np.ndarray  # datetime64[D]
    has_history: np.ndarray  # bool: at least one occasion before the cut-off


def summarize(occ: Occasions, as_of: dt.date, unit_days: float = WEEK) -> Summary:
    """Frequency, recency and age per member from occasions strictly before `as_of`.

    T runs to the day before `as_of` (so `as_of=1997-10-01` is calibration to 1997-09-30), as
    in Fader, Hardie & Lee (2005); repeat spend is the mean over occasions after the first.
    """
    cut = np.datetime64(as_of, "D")
    keep = occ.day < cut
    m, day, spend = occ.member[keep], occ.day[keep], occ.spend[keep]
    n = occ.n_members
    count = np.bincount(m, minlength=n)
    has = count > 0
    # Occasions are sorted by member then day, so the first/last of each run are first/last.
    idx_first = np.zeros(n, dtype=np.int64)
    idx_last = np.zeros(n, dtype=np.int64)
    if len(m):
        starts = np.flatnonzero(np.r_[True, m[1:] != m[:-1]])
        ends = np.r_[starts[1:], len(m)] - 1
        idx_first[m[starts]] = starts
        idx_last[m[starts]] = ends
    first = np.where(has, day[idx_first] if len(m) else cut, cut).astype("datetime64[D]")
    last = np.where(has, day[idx_last] if len(m) else cut, cut).astype("datetime64[D]")
    x = np.maximum(count - 1, 0).astype(np.float64)
    t_x = (last - first).astype(np.float64) / unit_days
    T = ((cut - np.timedelta64(1, "D")) - first).astype(np.float64) / unit_days
    T = np.where(has, T, 0.0)
    total = np.bincount(m, weights=spend.astype(np.float64), minlength=n)
    first_spend = np.zeros(n)
    if len(m):
        first_spend[has] = spend[idx_first[has]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_repeat = np.where(x > 0, (total - first_spend) / np.maximum(x, 1), 0.0)
    return Summary(x, t_x, T, mean_repeat, first, last, has)


def bgnbd_log_likelihood(
    params: tuple[float, float, float, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood, equation (6) of Fader, Hardie & Lee (2005)."""
    ll, _ = _bgnbd_ll_grad(np.asarray(params, dtype=np.float64), x, t_x, T, grad=False)
    return ll


def _bgnbd_ll_grad(
    theta: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, grad: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Log-likelihood per customer and, if asked, its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = theta
    gl = special.gammaln
    rep = x > 0
    a1 = gl(r + x) - gl(r) + r * np.log(alpha)
    lbeta_ab = special.betaln(a, b)
    a2 = special.betaln(a, b + x) - lbeta_ab - (r + x) * np.log(alpha + T)
    xm1 = np.where(rep, x - 1, 0.0)
    a3 = np.where(
        rep, special.betaln(a + 1, b + xm1) - lbeta_ab - (r + x) * np.log(alpha + t_x), -np.inf
    )
    mx = np.maximum(a2, a3)
    e2 = np.exp(a2 - mx)
    e3 = np.exp(a3 - mx)
    ll = a1 + mx + np.log(e2 + e3)
    if not grad:
        return ll, None
    w2 = e2 / (e2 + e3)
    w3 = 1.0 - w2
    dg = special.digamma
    d_r = dg(r + x) - dg(r) + np.log(alpha) - w2 * np.log(alpha + T) - w3 * np.log(alpha + t_x)
    d_alpha = r / alpha - w2 * (r + x) / (alpha + T) - w3 * (r + x) / (alpha + t_x)
    dab = dg(a + b)
    dabx = dg(a + b + x)
    d_a = w2 * (dab - dabx) + w3 * (dg(a + 1) - dabx - dg(a) + dab)
    d_b = w2 * (dg(b + x) - dabx - dg(b) + dab) + w3 * np.where(
        rep, dg(b + xm1) - dabx - dg(b) + dab, 0.0
    )
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def _compress(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Unique rows of the columns and their counts, so the likelihood sums over distinct cases."""
    stacked = np.stack(cols, axis=1)
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


class BetaGeo:
    """BG/NBD: Poisson purchases at rate lambda ~ Gamma(r, alpha), dropout after each purchase
    with probability p ~ Beta(a, b) (Fader, Hardie & Lee 2005), fitted by maximum likelihood."""

    r_: float
    alpha_: float
    a_: float
    b_: float
    ll_: float

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> BetaGeo:
        """Maximise the summed log-likelihood over log-parameters with L-BFGS-B."""
        (ux, ut, uT), w = _compress(
            np.asarray(x, float), np.asarray(t_x, float), np.asarray(T, float)
        )
        n = w.sum()
        pen = self.penalizer

        def neg(log_theta: np.ndarray) -> tuple[float, np.ndarray]:
            theta = np.exp(log_theta)
            ll, g = _bgnbd_ll_grad(theta, ux, ut, uT)
            assert g is not None
            value = -(w @ ll) / n + pen * float(theta @ theta)
            grad = -(g @ w) / n * theta + 2 * pen * theta * theta
            return float(value), grad

        best: optimize.OptimizeResult | None = None
        for start in (np.zeros(4), np.log([0.5, 5.0, 0.8, 2.5])):
            res = optimize.minimize(
                neg, start, jac=True, method="L-BFGS-B", options={"ftol": 1e-13, "gtol": 1e-9}
            )
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        assert best is not None
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in np.exp(best.x))
        self.ll_ = float(w @ bgnbd_log_likelihood(self.params, ux, ut, uT))
        return self

    @property
    def params(self) -> tuple[float, float, float, float]:
        """(r, alpha, a, b) as fitted."""
        return (self.r_, self.alpha_, self.a_, self.b_)

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(alive | x, t_x, T), equation (A10) of Fader, Hardie & Lee (2005)."""
        r, alpha, a, b = self.params
        x = np.asarray(x, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = (
                np.log(a)
                - np.log(np.maximum(b + x - 1, 1e-300))
                + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
            )
        return np.where(x > 0, 1.0 / (1.0 + np.exp(np.minimum(log_ratio, 700))), 1.0)

    def expected_visits(
        self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
    ) -> np.ndarray:
        """E[X(T, T + t) | x, t_x, T], equation (10) of Fader, Hardie & Lee (2005)."""
        r, alpha, a, b = self.params
        x = np.asarray(x, float)
        z = t / (alpha + T + t)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        head = (a + b + x - 1) / (a - 1)
        body = 1.0 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
        return np.maximum(head * body * self.p_alive(x, t_x, T), 0.0)

    def p_any_visit(self, t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """P(at least one visit in (T, T + t]) = P(alive) (1 - ((alpha+T)/(alpha+T+t))^(r+x)).

        Under BG/NBD a customer drops out only right after a purchase, so an alive customer's
        rate has posterior Gamma(r + x, alpha + T) and no purchase in t has that Laplace term.
        """
        r, alpha, _, _ = self.params
        x = np.asarray(x, float)
        stay = ((alpha + T) / (alpha + T + t)) ** (r + x)
        return self.p_alive(x, t_x, T) * (1.0 - stay)

    def median_wait(self, x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """Median time to the next visit if alive: solve ((alpha+T)/(alpha+T+w))^(r+x) = 1/2."""
        r, alpha, _, _ = self.params
        return (alpha + np.asarray(T, float)) * (2.0 ** (1.0 / (r + np.asarray(x, float))) - 1.0)


def gamma_gamma_log_likelihood(
    params: tuple[float, float, float], x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """Per-customer log-density of the mean spend m over x visits (Fader & Hardie 2013, eq. 3)."""
    p, q, gamma = params
    px = p * x
    return (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (px - 1) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(gamma + m * x)
    )


class GammaGamma:
    """Gamma-Gamma spend per visit: z ~ Gamma(p, nu), nu ~ Gamma(q, gamma) (Fader & Hardie 2013).

    Fitted on members with at least one repeat visit, on the mean of their repeat visits' spend;
    assumes spend is independent of visit frequency.
    """

    p_: float
    q_: float
    gamma_: float
    ll_: float

    def fit(self, x: np.ndarray, m: np.ndarray) -> GammaGamma:
        """Maximum likelihood over log-parameters, on members with x > 0 and m > 0."""
        x = np.asarray(x, float)
        m = np.asarray(m, float)
        ok = (x > 0) & (m > 0)
        x, m = x[ok], m[ok]
        if len(x) < 3:
            raise ValueError("Gamma-Gamma needs at least 3 members with repeat spend")
        scale = float(np.median(m))
        ms = m / scale  # fit on a unit scale (rupiah amounts are large), then scale gamma back

        def neg(log_theta: np.ndarray) -> float:
            p, q, g = np.exp(log_theta)
            return float(-gamma_gamma_log_likelihood((p, q, g), x, ms).mean())

        best: optimize.OptimizeResult | None = None
        for start in (np.log([1.0, 1.0, 1.0]), np.log([5.0, 4.0, 3.0])):
            res = optimize.minimize(neg, start, method="L-BFGS-B", options={"ftol": 1e-14})
            if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
                best = res
        assert best is not None
        p, q, g = np.exp(best.x)
        self.p_, self.q_, self.gamma_ = float(p), float(q), float(g * scale)
        self.ll_ = float(gamma_gamma_log_likelihood(self.params, x, m).sum())
        return self

    @property
    def params(self) -> tuple[float, float, float]:
        """(p, q, gamma) as fitted, gamma in the spend's own unit."""
        return (self.p_, self.q_, self.gamma_)

    def expected_spend(self, x: np.ndarray, m: np.ndarray) -> np.ndarray:
        """E[Z | x, m] = (q - 1)/(px + q - 1) * p gamma/(q - 1) + px/(px + q - 1) * m."""
        p, q, g = self.params
        x = np.asarray(x, float)
        m = np.where(x > 0, np.asarray(m, float), 0.0)
        prior = p * g / (q - 1) if q > 1 else float("nan")
        w = (q - 1) / (p * x + q - 1)
        return w * prior + (1 - w) * m
