"""Best hour and weekday to send a member a message.

A member's visit-hour distribution is estimated by Dirichlet-multinomial shrinkage: the
member's own counts per hour plus `prior_weight` pseudo-visits spread as their home store's
(or, lacking one, every member's) pattern,

    p_h = (n_h + k * s_h) / (n + k),

so a member with two visits mostly follows the store and one with fifty follows themself.
The best hour is the centre of the three-hour window (circular) with the most mass, because a
message is useful if it lands about an hour before or after the visit; the best weekday is the
mode of the shrunk weekday distribution. Weak for members whose habit changed recently (all
visits weigh alike) and for hours the store is closed that a member never visits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BestTime"]


class BestTime:
    """Shrunk per-member hour and weekday distributions; best hour by a +-1 h circular window."""

    hour_prior_: np.ndarray  # (24,) the overall pattern
    weekday_prior_: np.ndarray  # (7,)

    def __init__(self, prior_weight: float = 3.0, window: int = 1) -> None:
        self.prior_weight = prior_weight
        self.window = window

    def fit_predict(
        self,
        member: np.ndarray,
        hour: np.ndarray,
        weekday: np.ndarray,
        n_members: int,
        store_hours: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(best_hour, best_weekday) per member from one (member, hour, weekday) per visit."""
        m = member.astype(np.int64)
        hours = np.bincount(m * 24 + hour, minlength=n_members * 24).reshape(n_members, 24)
        days = np.bincount(m * 7 + weekday, minlength=n_members * 7).reshape(n_members, 7)
        total_h = hours.sum(axis=0).astype(np.float64)
        self.hour_prior_ = total_h / max(total_h.sum(), 1.0)
        total_d = days.sum(axis=0).astype(np.float64)
        self.weekday_prior_ = total_d / max(total_d.sum(), 1.0)
        prior = np.broadcast_to(self.hour_prior_, (n_members, 24)).copy()
        if store_hours is not None:
            known = np.isfinite(store_hours).all(axis=1) & (store_hours.sum(axis=1) > 0)
            prior[known] = store_hours[known] / store_hours[known].sum(axis=1, keepdims=True)
        k = self.prior_weight
        n = hours.sum(axis=1, keepdims=True)
        p_hour = (hours + k * prior) / (n + k)
        window = sum(np.roll(p_hour, s, axis=1) for s in range(-self.window, self.window + 1))
        p_day = (days + k * self.weekday_prior_) / (days.sum(axis=1, keepdims=True) + k)
        return np.argmax(window, axis=1).astype(np.int8), np.argmax(p_day, axis=1).astype(np.int8)
