"""The one entry point head office calls: `predict(history, as_of) -> Predictions`.

Everything is fitted on the lines whose store-local date is before `as_of` and nothing else:
the history is cut first and its codes compacted, so lines on or after `as_of` cannot
influence a parameter, a feature, a ranking or a tie.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tillstamp.insight.basket import RANKER_FEATURES, RepeatRanker
from tillstamp.insight.btyd import BetaGeo, GammaGamma, summarize
from tillstamp.insight.history import History, occasions, receipts
from tillstamp.insight.reorder import ReorderDue
from tillstamp.insight.revisit import (
    NotEnoughHistory,
    RevisitModel,
    VisitCountModel,
    visit_features,
)
from tillstamp.insight.timing import BestTime

__all__ = ["MODEL_VERSION", "MemberPrediction", "Predictions", "predict"]

MODEL_VERSION = "insight-1.2"
"""Changes whenever a model, a default or a feature changes what `predict` returns."""

HORIZON_DAYS = 14
VALUE_WEEKS = 52.0


@dataclass(frozen=True)
class MemberPrediction:
    """Every prediction for one member, as plain Python values."""

    member: str
    p_alive: float
    p_visit_14d: float
    expected_visits_30d: float
    value_12m: int  # minor units
    next_visit: dt.date | None  # None when the fit expects no further visit (NaT)
    best_hour: int  # 0-23, store-local
    best_weekday: int  # 0 = Monday
    skus: list[str]  # up to 10, best first
    categories: list[str]  # up to 10, best first
    reorder: list[tuple[str, dt.date]]  # (category, due date), soonest first


@dataclass(frozen=True, eq=False)
class Predictions:
    """Predictions for every member with history before `as_of`, one array element each."""

    as_of: dt.date
    members: tuple[str, ...]
    p_alive: np.ndarray  # float64
    p_visit_14d: np.ndarray  # float64
    expected_visits_30d: np.ndarray  # float64
    value_12m: np.ndarray  # int64, minor units
    next_visit: np.ndarray  # datetime64[D]
    best_hour: np.ndarray  # int8
    best_weekday: np.ndarray  # int8
    skus: list[list[str]]
    categories: list[list[str]]
    reorder: list[list[tuple[str, dt.date]]]
    model_params: dict[str, Any]
    model_version: str = MODEL_VERSION

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, i: int) -> MemberPrediction:
        return MemberPrediction(
            member=self.members[i],
            p_alive=float(self.p_alive[i]),
            p_visit_14d=float(self.p_visit_14d[i]),
            expected_visits_30d=float(self.expected_visits_30d[i]),
            value_12m=int(self.value_12m[i]),
            next_visit=self.next_visit[i].astype(dt.date),
            best_hour=int(self.best_hour[i]),
            best_weekday=int(self.best_weekday[i]),
            skus=list(self.skus[i]),
            categories=list(self.categories[i]),
            reorder=list(self.reorder[i]),
        )

    def __iter__(self) -> Iterator[MemberPrediction]:
        return (self[i] for i in range(len(self)))

    def for_member(self, member_id: str) -> MemberPrediction:
        """The predictions of one member; KeyError if they had no history before `as_of`."""
        i = int(np.searchsorted(self.members, member_id))
        if i >= len(self.members) or self.members[i] != member_id:
            raise KeyError(member_id)
        return self[i]


def _codes_to_ids(codes: np.ndarray, ids: tuple[str, ...]) -> list[list[str]]:
    table = np.asarray(ids, dtype=object)
    return [list(table[row[row >= 0]]) for row in codes]


def predict(history: History, as_of: dt.date) -> Predictions:
    """Fit every model on the lines before `as_of` and predict for each member seen before it."""
    h = history.before(as_of)
    n = len(h.members)
    occ = occasions(h)
    params: dict[str, Any] = {}

    # Visits and value: BG/NBD in weeks, T to the day before as_of; Gamma-Gamma on repeat spend.
    s = summarize(occ, as_of)
    bg = BetaGeo().fit(s.x, s.t_x, s.T) if n else None
    if bg is not None:
        p_alive = bg.p_alive(s.x, s.t_x, s.T)
        exp30 = bg.expected_visits(30 / 7, s.x, s.t_x, s.T)
        exp12m = bg.expected_visits(VALUE_WEEKS, s.x, s.t_x, s.T)
        wait_days = np.ceil(bg.median_wait(s.x, s.T) * 7)
        params["bgnbd"] = {
            "r": bg.r_,
            "alpha": bg.alpha_,
            "a": bg.a_,
            "b": bg.b_,
            "ll": bg.ll_,
            "unit": "week",
        }
    else:
        p_alive = exp30 = exp12m = wait_days = np.zeros(0)
    spend = _spend_per_visit(s.x, s.mean_repeat_spend, occ.spend, occ.member, n, params)
    value = np.asarray(exp12m * spend, dtype=np.float64)
    value_12m = np.round(np.where(np.isfinite(value) & (value > 0), value, 0.0)).astype(np.int64)
    last_day = np.datetime64(as_of, "D") - np.timedelta64(1, "D")
    next_visit = np.maximum(
        last_day + np.minimum(np.nan_to_num(wait_days, nan=365.0, posinf=365.0), 3650.0).astype(np.int64),
        np.datetime64(as_of, "D"),
    ).astype("datetime64[D]")

    # Visits again within 14 days: logistic regression chosen on a split before as_of.
    p14 = _p_visit(occ, as_of, bg, s, params)
    # Visits in 30 days: Poisson regression with BG/NBD's expectation among its features.
    exp30 = _visits_30d(occ, as_of, exp30, params)

    # Next basket over SKUs and over categories; a SKU's category is a feature of the first.
    sku_group = np.full(len(h.skus), -1, dtype=np.int64)
    np.maximum.at(sku_group, h.sku, h.category.astype(np.int64))
    sku_ranker, cat_ranker = RepeatRanker(), RepeatRanker()
    sku_codes = sku_ranker.fit_recommend(
        h.member, h.occasion, h.sku, n, len(h.skus), as_of, group=sku_group
    )
    cat_codes = cat_ranker.fit_recommend(
        h.member, h.occasion, h.category, n, len(h.categories), as_of
    )
    params["next_basket"] = {
        "model": "repeat-ranker",
        "features": list(RANKER_FEATURES),
        "trained_on_days_before": list(sku_ranker.validation_days),
        "blend_decay_95": {"skus": sku_ranker.blend_, "categories": cat_ranker.blend_},
        "validation_ndcg": {
            "skus": {str(a): v for a, v in sku_ranker.validation_.items()},
            "categories": {str(a): v for a, v in cat_ranker.validation_.items()},
        },
    }

    # Reorder due per (member, category) bought on at least three dates.
    reo = ReorderDue()
    due = reo.fit_predict(h.member, h.occasion, h.category, len(h.categories), as_of)
    reorder: list[list[tuple[str, dt.date]]] = [[] for _ in range(n)]
    order = np.lexsort((due.category, due.due, due.member))
    due_dates = due.due[order].tolist()
    for m, c, d in zip(
        due.member[order].tolist(), due.category[order].tolist(), due_dates, strict=True
    ):
        reorder[m].append((h.categories[c], d))
    params["reorder"] = {"min_occasions": reo.min_occasions, "prior_weight": reo.prior_weight}

    # Best hour and weekday to write.
    rm, rh, rw = receipts(h)
    timing = BestTime()
    best_hour, best_weekday = timing.fit_predict(rm, rh, rw, n, h.store_hours)
    params["best_time"] = {"prior_weight": timing.prior_weight, "window_hours": timing.window}

    # A history too thin to fit (nobody came twice) can leave BG/NBD at a boundary where the
    # expectations are inf or NaN: then nothing is expected, rather than a number that is not one.
    exp30 = np.nan_to_num(np.asarray(exp30, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    fine = np.isfinite(np.asarray(p_alive, dtype=np.float64))
    return Predictions(
        as_of=as_of,
        members=h.members,
        p_alive=np.where(fine, np.asarray(p_alive, dtype=np.float64), 0.0),
        p_visit_14d=np.nan_to_num(np.asarray(p14, dtype=np.float64), nan=0.0),
        expected_visits_30d=exp30,
        value_12m=value_12m,
        next_visit=next_visit,
        best_hour=best_hour,
        best_weekday=best_weekday,
        skus=_codes_to_ids(sku_codes, h.skus),
        categories=_codes_to_ids(cat_codes, h.categories),
        reorder=reorder,
        model_params=params,
    )


def _spend_per_visit(
    x: np.ndarray,
    mean_repeat: np.ndarray,
    spend: np.ndarray,
    member: np.ndarray,
    n: int,
    params: dict[str, Any],
) -> np.ndarray:
    """Gamma-Gamma expected spend per visit; each member's own mean if it cannot be fitted."""
    own = np.bincount(member, weights=spend, minlength=n) / np.maximum(x + 1, 1)
    try:
        gg = GammaGamma().fit(x, mean_repeat)
    except ValueError:
        params["gamma_gamma"] = None
        return own
    if gg.q_ <= 1:  # the population mean spend is infinite under the fitted prior
        params["gamma_gamma"] = {"p": gg.p_, "q": gg.q_, "gamma": gg.gamma_, "used": False}
        return own
    params["gamma_gamma"] = {"p": gg.p_, "q": gg.q_, "gamma": gg.gamma_}
    return np.asarray(gg.expected_spend(x, mean_repeat))


def _p_visit(
    occ: Any, as_of: dt.date, bg: BetaGeo | None, s: Any, params: dict[str, Any]
) -> np.ndarray:
    """Logistic p_visit_14d, or BG/NBD's P(any visit) when the history is too short to train."""
    try:
        model = RevisitModel(horizon_days=HORIZON_DAYS).fit(occ, as_of)
    except NotEnoughHistory:
        params["p_visit_14d"] = {"model": "bgnbd"}
        if bg is None:
            return np.zeros(0)
        return np.asarray(bg.p_any_visit(HORIZON_DAYS / 7, s.x, s.t_x, s.T))
    params["p_visit_14d"] = {
        "model": "logistic",
        "features": model.chosen_,
        "l2": model.l2_,
        "validation_log_loss": model.validation_,
    }
    return model.predict(visit_features(occ, as_of, HORIZON_DAYS))


def _visits_30d(
    occ: Any, as_of: dt.date, bgnbd_30d: np.ndarray, params: dict[str, Any]
) -> np.ndarray:
    """Poisson-regression expected visits in 30 days, or BG/NBD's when the history is short."""
    try:
        model = VisitCountModel(horizon_days=30).fit(occ, as_of)
    except NotEnoughHistory:
        params["expected_visits_30d"] = {"model": "bgnbd"}
        return bgnbd_30d
    params["expected_visits_30d"] = {
        "model": "poisson",
        "features": model.chosen_,
        "l2": model.l2_,
        "validation_deviance": model.validation_,
    }
    return model.predict(visit_features(occ, as_of, 30))
