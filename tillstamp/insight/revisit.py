"""p_visit_14d: the probability that a member visits again within a horizon, calibrated.

BG/NBD alone is weak on a grocery panel, where almost every member is "alive"; a logistic
regression on recency, frequency, spend, tenure, recent counts and gaps ranks and calibrates
better. Which feature set and which L2 strength to use is decided on a validation split that
lies wholly inside the training period: models are trained on labels from earlier windows and
scored on the last complete window before `as_of`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special

from tillstamp.insight.btyd import BetaGeo, summarize
from tillstamp.insight.history import Occasions

__all__ = [
    "FEATURE_SETS",
    "Features",
    "Logistic",
    "NotEnoughHistory",
    "Poisson",
    "RevisitModel",
    "VisitCountModel",
    "visit_features",
    "visits_between",
]

_BASE = (
    "log_recency",
    "log_frequency",
    "log_tenure",
    "log_mean_spend",
    "log_c7",
    "log_c14",
    "log_c30",
    "log_c60",
    "log_mean_gap",
    "log_last_gap",
    "log_recency_over_gap",
    "single",
)
_BG = ("bg_logit_p_any", "bg_p_alive", "bg_log_expected")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "recency": ("log_recency",),
    "rfm": ("log_recency", "log_frequency", "log_mean_spend"),
    "full": _BASE,
    "full+bgnbd": _BASE + _BG,
}


class NotEnoughHistory(ValueError):
    """The history is too short or too uniform to train and validate the model."""


@dataclass(frozen=True, eq=False)
class Features:
    """One row of named features per member, as of a cut-off."""

    names: tuple[str, ...]
    X: np.ndarray  # float64 (n_members, len(names))
    has_history: np.ndarray  # bool (n_members,)

    def select(self, names: tuple[str, ...]) -> np.ndarray:
        """The columns `names`, in that order."""
        return self.X[:, [self.names.index(n) for n in names]]


def visits_between(occ: Occasions, start: dt.date, end: dt.date) -> np.ndarray:
    """Occasions per member with start <= day < end."""
    lo, hi = np.datetime64(start, "D"), np.datetime64(end, "D")
    keep = (occ.day >= lo) & (occ.day < hi)
    return np.bincount(occ.member[keep], minlength=occ.n_members)


def visit_features(
    occ: Occasions,
    cutoff: dt.date,
    horizon_days: float = 14.0,
    bgnbd: bool = True,
    bgnbd_fit_members: int = 30_000,
) -> Features:
    """Recency, frequency, spend, tenure, recent counts, gaps (and BG/NBD outputs) before `cutoff`.

    Only occasions strictly before `cutoff` are read. BG/NBD's four population parameters are
    fitted on at most `bgnbd_fit_members` members (a seeded sample) to bound the cost.
    """
    s = summarize(occ, cutoff, unit_days=1.0)
    cut = np.datetime64(cutoff, "D")
    n_occ = s.x + 1
    recency = (cut - s.last).astype(np.float64)  # >= 1 day
    tenure = (cut - s.first).astype(np.float64)
    before = occ.day < cut
    total = np.bincount(occ.member[before], weights=occ.spend[before], minlength=occ.n_members)
    mean_spend = np.where(s.has_history, total / np.maximum(n_occ, 1), 0.0)
    counts = [
        visits_between(occ, cutoff - dt.timedelta(days=d), cutoff).astype(np.float64)
        for d in (7, 14, 30, 60)
    ]
    mean_gap = np.where(s.x > 0, s.t_x / np.maximum(s.x, 1), tenure)
    last_gap = _last_gaps(occ, cut, tenure)
    cols: dict[str, np.ndarray] = {
        "log_recency": np.log1p(recency),
        "log_frequency": np.log1p(n_occ),
        "log_tenure": np.log1p(tenure),
        "log_mean_spend": np.log1p(np.maximum(mean_spend, 0.0)),
        "log_c7": np.log1p(counts[0]),
        "log_c14": np.log1p(counts[1]),
        "log_c30": np.log1p(counts[2]),
        "log_c60": np.log1p(counts[3]),
        "log_mean_gap": np.log1p(mean_gap),
        "log_last_gap": np.log1p(last_gap),
        "log_recency_over_gap": np.log((recency + 1.0) / (mean_gap + 1.0)),
        "single": (s.x == 0).astype(np.float64),
    }
    names: tuple[str, ...] = _BASE
    if bgnbd:
        fit_on = np.flatnonzero(s.has_history)
        if len(fit_on) > bgnbd_fit_members:
            rng = np.random.default_rng(0)
            fit_on = np.sort(rng.choice(fit_on, bgnbd_fit_members, replace=False))
        weeks = summarize(occ, cutoff)
        bg = BetaGeo().fit(weeks.x[fit_on], weeks.t_x[fit_on], weeks.T[fit_on])
        p_any = bg.p_any_visit(horizon_days / 7.0, weeks.x, weeks.t_x, weeks.T)
        p_any = np.clip(p_any, 1e-6, 1 - 1e-6)
        cols["bg_logit_p_any"] = special.logit(p_any)
        cols["bg_p_alive"] = bg.p_alive(weeks.x, weeks.t_x, weeks.T)
        cols["bg_log_expected"] = np.log1p(
            bg.expected_visits(horizon_days / 7.0, weeks.x, weeks.t_x, weeks.T)
        )
        names = _BASE + _BG
    X = np.column_stack([cols[n] for n in names])
    X[~s.has_history] = 0.0
    return Features(names, X, s.has_history)


def _last_gaps(occ: Occasions, cut: np.datetime64, tenure: np.ndarray) -> np.ndarray:
    """Days between each member's last two occasions before `cut` (tenure if only one)."""
    keep = occ.day < cut
    m, day = occ.member[keep], occ.day[keep]
    out = tenure.copy()
    if len(m) < 2:
        return out
    same = m[1:] == m[:-1]
    is_last = np.r_[m[1:] != m[:-1], True]
    # The gap ending at position i+1 belongs to member m[i+1]; keep it where i+1 is a last.
    gaps = (day[1:] - day[:-1]).astype(np.float64)
    sel = same & is_last[1:]
    out[m[1:][sel]] = gaps[sel]
    return out


class Logistic:
    """L2-regularised logistic regression on standardized features, fitted with BFGS or Newton.

    Minimises mean log-loss + l2 * ||w||^2 (the intercept is not penalised).
    """

    coef_: np.ndarray
    intercept_: float
    mean_: np.ndarray
    scale_: np.ndarray

    def __init__(self, l2: float = 1e-3, solver: str = "bfgs") -> None:
        if solver not in ("bfgs", "newton"):
            raise ValueError(f"unknown solver {solver!r}: 'bfgs' or 'newton'")
        self.l2 = l2
        self.solver = solver

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> Logistic:
        """Fit weights by maximum penalised (weighted) likelihood."""
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        y = np.asarray(y, dtype=np.float64)
        n, k = Z.shape
        sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        sw = sw / sw.mean()
        l2 = self.l2

        def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k]
            z = np.einsum("ij,j->i", Z, w) + b  # einsum: no threaded BLAS call
            # log(1 + e^z) - y z, stably
            loss = sw * (np.logaddexp(0.0, z) - y * z)
            p = special.expit(z)
            g = sw * (p - y)
            grad = np.r_[np.einsum("ij,i->j", Z, g) / n + 2 * l2 * w, g.mean()]
            return float(loss.mean() + l2 * np.sum(w * w)), grad

        if self.solver == "newton":
            theta = _newton(neg, Z, sw, l2)
        else:
            # BFGS, not L-BFGS-B: see tillstamp.insight.btyd on LAPACK calls under a threaded
            # BLAS.
            theta = optimize.minimize(neg, np.zeros(k + 1), jac=True, method="BFGS").x
        self.coef_ = theta[:k]
        self.intercept_ = float(theta[k])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(y = 1 | X)."""
        Z = (X - self.mean_) / self.scale_
        return np.asarray(special.expit(np.einsum("ij,j->i", Z, self.coef_) + self.intercept_))


def _newton(
    neg: Any, Z: np.ndarray, sw: np.ndarray, l2: float, tol: float = 1e-9, max_iter: int = 50
) -> np.ndarray:
    """Minimise the penalised logistic loss `neg` by Newton steps with backtracking.

    Why beside BFGS: on hundreds of thousands of rows (the next-basket ranker) BFGS takes
    ~150 passes over the data; Newton takes ~10, each one pass plus a (k+1)^2 Hessian.
    """
    n, k = Z.shape
    # The Hessian's products are k^2 per row: one BLAS call per step beats einsum here. It
    # only steers the step, so float32 is enough; the loss and gradient stay float64, and
    # they decide where it stops.
    Z1 = np.empty((n, k + 1), np.float32)
    Z1[:, :k] = Z
    Z1[:, k] = 1.0
    scaled = np.empty_like(Z1)  # reused: allocating it each step cost more than the product
    ridge = np.r_[np.full(k, 2 * l2), 0.0]
    theta = np.zeros(k + 1)
    f, g = neg(theta)
    for _ in range(max_iter):
        p = special.expit(Z1 @ theta.astype(np.float32))
        np.multiply(Z1, (sw * p * (1 - p) / n).astype(np.float32)[:, None], out=scaled)
        H = (scaled.T @ Z1).astype(np.float64) + np.diag(ridge)
        # A tiny ridge on the intercept too: a column of one class must not make H singular.
        step = np.linalg.solve(H + 1e-12 * np.eye(k + 1), g)
        t = 1.0
        while True:
            f_new, g_new = neg(theta - t * step)
            if f_new <= f - 1e-4 * t * float(g @ step) or t < 1e-8:
                break
            t /= 2
        theta, f, g = theta - t * step, f_new, g_new
        # Converged, or rounding no longer lets a step decrease the loss.
        if float(np.abs(g).max()) < tol or t < 1e-8:
            break
    return theta


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


class RevisitModel:
    """P(at least one visit in [as_of, as_of + horizon)) per member, by logistic regression.

    Training rows are members as of cut-offs as_of - horizon - 7k (k = 0..windows-1), labelled by
    whether they visited in the following `horizon` days, all before `as_of`. The feature set and
    L2 strength are chosen by log-loss on the last window, with models trained one window earlier.
    """

    chosen_: str
    l2_: float
    validation_: dict[str, float]
    model_: Logistic

    @staticmethod
    def _label(counts: np.ndarray) -> np.ndarray:
        return counts > 0

    @staticmethod
    def _model(l2: float) -> Logistic:
        return Logistic(l2)

    @staticmethod
    def _loss(pred: np.ndarray, y: np.ndarray) -> float:
        return _log_loss(pred, y)

    def __init__(
        self,
        horizon_days: int = 14,
        windows: int = 4,
        l2_grid: tuple[float, ...] = (1e-4, 1e-2),
        feature_sets: tuple[str, ...] = ("recency", "rfm", "full", "full+bgnbd"),
        max_rows: int = 60_000,
        max_members: int = 40_000,
        seed: int = 0,
    ) -> None:
        self.horizon_days = horizon_days
        self.windows = windows
        self.l2_grid = l2_grid
        self.feature_sets = feature_sets
        self.max_rows = max_rows
        self.max_members = max_members
        self.seed = seed

    def _rows(
        self, occ: Occasions, cutoffs: list[dt.date], cache: dict[dt.date, Features]
    ) -> tuple[Features, np.ndarray]:
        feats, labels = [], []
        # Rows come from a seeded sample of members, the same at every cut-off.
        sample = np.ones(occ.n_members, bool)
        if occ.n_members > self.max_members:
            sample[:] = False
            rng = np.random.default_rng(self.seed)
            sample[rng.choice(occ.n_members, self.max_members, replace=False)] = True
        for c in cutoffs:
            if not (occ.day < np.datetime64(c, "D")).any():
                raise NotEnoughHistory(f"no occasion before the training cut-off {c}")
            if c not in cache:
                cache[c] = visit_features(occ, c, self.horizon_days)
            f = cache[c]
            y = self._label(visits_between(occ, c, c + dt.timedelta(days=self.horizon_days)))
            use = f.has_history & sample
            feats.append(f.X[use])
            labels.append(y[use])
        X = np.concatenate(feats)
        y = np.concatenate(labels).astype(np.float64)
        if len(y) > self.max_rows:
            pick = np.random.default_rng(self.seed).choice(len(y), self.max_rows, replace=False)
            X, y = X[pick], y[pick]
        names = cache[cutoffs[0]].names
        return Features(names, X, np.ones(len(y), bool)), y

    def fit(self, occ: Occasions, as_of: dt.date) -> RevisitModel:
        """Choose and fit the model from occasions strictly before `as_of`."""
        h = dt.timedelta(days=self.horizon_days)
        week = dt.timedelta(days=7)
        cache: dict[dt.date, Features] = {}
        val_cut = as_of - h
        train_cuts = [val_cut - h - k * week for k in range(self.windows)]
        f_val, y_val = self._rows(occ, [val_cut], cache)
        f_tr, y_tr = self._rows(occ, train_cuts, cache)
        for y in (y_val, y_tr):
            if len(y) < 20 or y.min() == y.max():
                raise NotEnoughHistory("too few members, or all alike, to train and validate")
        scores: dict[str, float] = {}
        best = ("", 0.0, np.inf)
        for fs in self.feature_sets:
            cols = FEATURE_SETS[fs]
            for l2 in self.l2_grid:
                m = self._model(l2).fit(f_tr.select(cols), y_tr)
                loss = self._loss(m.predict_proba(f_val.select(cols)), y_val)
                scores[f"{fs}@{l2:g}"] = loss
                if loss < best[2]:
                    best = (fs, l2, loss)
        self.chosen_, self.l2_, self.validation_ = best[0], best[1], scores
        final_cuts = [as_of - h - k * week for k in range(self.windows)]
        f_all, y_all = self._rows(occ, final_cuts, cache)
        self.model_ = self._model(self.l2_).fit(f_all.select(FEATURE_SETS[self.chosen_]), y_all)
        return self

    def predict(self, features: Features) -> np.ndarray:
        """P(visit within the horizon) per member row of `features` (0 without history)."""
        p = self.model_.predict_proba(features.select(FEATURE_SETS[self.chosen_]))
        return np.where(features.has_history, p, 0.0)


class Poisson(Logistic):
    """L2-regularised Poisson regression (log link) on standardized features, fitted with BFGS.

    Minimises mean (exp(z) - y z) + l2 * ||w||^2, z = x.w + b; `predict_proba` is E[y | x].
    """

    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> Poisson:
        """Fit weights by maximum penalised likelihood."""
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Z = (X - self.mean_) / self.scale_
        y = np.asarray(y, dtype=np.float64)
        n, k = Z.shape
        l2 = self.l2

        def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:k], theta[k]
            z = np.minimum(np.einsum("ij,j->i", Z, w) + b, 30.0)
            mu = np.exp(z)
            g = mu - y
            grad = np.r_[np.einsum("ij,i->j", Z, g) / n + 2 * l2 * w, g.mean()]
            return float((mu - y * z).mean() + l2 * np.sum(w * w)), grad

        start = np.r_[np.zeros(k), np.log(max(float(y.mean()), 1e-3))]
        res = optimize.minimize(neg, start, jac=True, method="BFGS")
        self.coef_ = res.x[:k]
        self.intercept_ = float(res.x[k])
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """E[y | X] (the name matches Logistic so the selection code serves both)."""
        Z = (X - self.mean_) / self.scale_
        z = np.einsum("ij,j->i", Z, self.coef_) + self.intercept_
        return np.asarray(np.exp(np.minimum(z, 30.0)))


class VisitCountModel(RevisitModel):
    """Expected visits in [as_of, as_of + horizon) by Poisson regression on the same features,
    BG/NBD's expectation among them; chosen and trained on windows before as_of like
    `RevisitModel`, by Poisson deviance."""

    model_: Poisson

    def __init__(self, horizon_days: int = 30, **kwargs: Any) -> None:
        super().__init__(horizon_days=horizon_days, **kwargs)

    @staticmethod
    def _label(counts: np.ndarray) -> np.ndarray:
        return counts.astype(np.float64)

    @staticmethod
    def _model(l2: float) -> Poisson:
        return Poisson(l2)

    @staticmethod
    def _loss(pred: np.ndarray, y: np.ndarray) -> float:
        mu = np.maximum(pred, 1e-9)
        return float(np.mean(mu - y * np.log(mu)))
