"""`hq flow report NAME`: what a flow changed, measured against its holdout.

Intent to treat: every decided message that was not held out counts as treated (sent,
skipped for consent or cap, failed, unknown alike), because the holdout is drawn before
those checks; comparing only the messages that were sent would compare different people.
For each group: members, the share who visited within `window` days after the trigger day,
their spend in that window; then treated minus held out, with a 95 % interval (normal
approximation: two proportions for the share, Welch for spend per member).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import store_flows as sf

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Group:
    """One side of the comparison."""

    members: int
    visited: int
    spend: int
    spend_sq: int

    @property
    def share(self) -> float:
        """Share who visited in the window."""
        return self.visited / self.members if self.members else 0.0

    @property
    def mean_spend(self) -> float:
        """Spend per member in the window (minor units)."""
        return self.spend / self.members if self.members else 0.0

    def var_spend(self) -> float:
        """Sample variance of spend per member."""
        n = self.members
        if n < 2:
            return 0.0
        return max(0.0, (self.spend_sq - self.spend * self.spend / n) / (n - 1))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"members": self.members, "visited": self.visited, "visit_share": round(self.share, 4),
                "spend": self.spend, "spend_per_member": round(self.mean_spend)}


def _group(rows: list[tuple[str, int, int]], name: str) -> Group:
    mine = [r for r in rows if r[0] == name]
    return Group(len(mine), sum(1 for r in mine if r[1] > 0), sum(r[2] for r in mine), sum(r[2] * r[2] for r in mine))


def compare(treated: Group, held: Group) -> dict[str, Any]:
    """Differences (treated - held out) with 95 % intervals; None where a group is empty."""
    if not treated.members or not held.members:
        return {"visit_share": None, "spend_per_member": None}
    d = treated.share - held.share
    se = math.sqrt(treated.share * (1 - treated.share) / treated.members + held.share * (1 - held.share) / held.members)
    ds = treated.mean_spend - held.mean_spend
    ses = math.sqrt(treated.var_spend() / treated.members + held.var_spend() / held.members)
    return {"visit_share": {"difference": round(d, 4), "ci95": [round(d - Z95 * se, 4), round(d + Z95 * se, 4)]},
            "spend_per_member": {"difference": round(ds), "ci95": [round(ds - Z95 * ses), round(ds + Z95 * ses)]}}


def flow_report(store: Any, flow: str, window: int = 14) -> dict[str, Any]:
    """The report's data."""
    rows = sf.outcome_rows(store, flow, window)
    treated, held = _group(rows, "treated"), _group(rows, "held_out")
    return {"flow": flow, "window_days": window, "treated": treated.to_json(), "held_out": held.to_json(),
            "difference": compare(treated, held), "states": sf.state_counts(store, flow)}
