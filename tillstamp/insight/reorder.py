"""Reorder due: when a member is next expected to buy a category they buy regularly.

For each member and category bought on at least `min_occasions` distinct local dates, the
gap to the next purchase is the median of the member's own gaps shrunk toward the category's
median gap over all members (a precision-weighted mean with `prior_weight` pseudo-gaps):

    gap = (n * median_own + k * median_category) / (n + k)

and the due date is the last purchase plus that gap, but never before the cut-off: a reorder
that is overdue is due now. The median is robust to the odd long break (a holiday) that
would drag a mean. Weak where a member's gaps are irregular or the category is bought on
impulse; it ignores stock-up purchases (quantity) and seasonality.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from tillstamp.insight.history import unique_int

__all__ = ["ReorderDue", "Reorders"]


@dataclass(frozen=True, eq=False)
class Reorders:
    """One element per (member, category) with a due date."""

    member: np.ndarray  # int32
    category: np.ndarray  # int32
    due: np.ndarray  # datetime64[D]
    gap_days: np.ndarray  # float64, the shrunk gap


def _pair_days(member: np.ndarray, day: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Sorted unique (member, category, day) rows as an (n, 3) int64 array."""
    ok = category >= 0
    days = (day[ok] - np.datetime64("1970-01-01", "D")).astype(np.int64)
    if not ok.any():
        return np.zeros((0, 3), np.int64)
    lo = days.min()
    span = int(days.max() - lo) + 1
    n_cat = int(category[ok].max()) + 1
    key = (member[ok].astype(np.int64) * n_cat + category[ok]) * span + (days - lo)
    uniq, _ = unique_int(key)
    return np.stack([uniq // span // n_cat, uniq // span % n_cat, uniq % span + lo], axis=1)


def _group_medians(
    group: np.ndarray, value: np.ndarray, with_bounds: bool = False
) -> tuple[np.ndarray, ...]:
    """Median of `value` per distinct `group` (vectorised: sort, then take the middle)."""
    order = np.lexsort((value, group))
    g, v = group[order], value[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    n = np.diff(np.r_[starts, len(g)])
    med = (v[starts + (n - 1) // 2] + v[starts + n // 2]) / 2.0
    if with_bounds:
        # Bounds refer to the original order, which is already grouped when keys come sorted.
        return g[starts], med, starts, n
    return g[starts], med


class ReorderDue:
    """Per (member, category): last purchase + median own gap shrunk toward the category median."""

    category_gap_: np.ndarray  # median gap in days per category (nan where none)

    def __init__(self, min_occasions: int = 3, prior_weight: float = 2.0) -> None:
        self.min_occasions = min_occasions
        self.prior_weight = prior_weight

    def fit_predict(
        self,
        member: np.ndarray,
        day: np.ndarray,
        category: np.ndarray,
        n_categories: int,
        as_of: dt.date,
    ) -> Reorders:
        """Due dates from the lines before `as_of` (lines on or after it are ignored)."""
        before = day < np.datetime64(as_of, "D")
        trip = _pair_days(member[before], day[before], category[before])
        empty = Reorders(
            np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, "datetime64[D]"), np.zeros(0)
        )
        self.category_gap_ = np.full(n_categories, np.nan)
        if len(trip) == 0:
            return empty
        pair = trip[:, 0] * (n_categories + 1) + trip[:, 1]
        same = pair[1:] == pair[:-1]
        gaps = np.diff(trip[:, 2])[same].astype(np.float64)
        gap_pair = pair[1:][same]
        gap_cat = trip[1:, 1][same]
        # Category medians over every gap of every member.
        cats, cat_med = _group_medians(gap_cat, gaps)
        self.category_gap_[cats] = cat_med
        # Per-pair medians; gaps are grouped by pair already (the keys are sorted).
        _, med_all, p_starts, n_gaps = _group_medians(gap_pair, gaps, with_bounds=True)
        keep = n_gaps >= self.min_occasions - 1
        sel_starts = p_starts[keep]
        sel_n = n_gaps[keep]
        med = med_all[keep]
        if len(sel_starts) == 0:
            return empty
        last_idx = sel_starts + sel_n - 1  # index into gaps: the pair's last gap
        pairs = gap_pair[last_idx]
        mem = (pairs // (n_categories + 1)).astype(np.int32)
        cat = (pairs % (n_categories + 1)).astype(np.int32)
        # The last purchase day of the pair: the day that ends its last gap.
        same_idx = np.flatnonzero(same) + 1
        last_day = trip[same_idx[last_idx], 2]
        k = self.prior_weight
        gap = (sel_n * med + k * self.category_gap_[cat]) / (sel_n + k)
        due = np.datetime64("1970-01-01", "D") + np.round(last_day + gap).astype(np.int64)
        due = np.maximum(due, np.datetime64(as_of, "D"))
        return Reorders(mem, cat, due.astype("datetime64[D]"), gap)
