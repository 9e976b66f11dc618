"""What a member's predictions mean to a person: the churn-risk band and a plain sentence.

Churn-risk bands put the predicted chance of a visit in the next 14 days in three words; `hq
predict` stores the band with each prediction and the segment leaf `churn_risk` selects on it.
Kept free of the models' imports, so the segment language and the member record stay light.
Below 0.2 a member is unlikely to come back on their own soon ("high" risk); from 0.5 on they
probably will ("low"); in between, "medium" (docs/INSIGHT.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

CHURN_BANDS = (("high", 0.2), ("medium", 0.5), ("low", float("inf")))
CHURN_RISKS = tuple(name for name, _ in CHURN_BANDS)


def churn_risk(p_visit_14d: float) -> str:
    """The band of a probability of visiting within 14 days."""
    for name, upper in CHURN_BANDS:
        if p_visit_14d < upper:
            return name
    return CHURN_BANDS[-1][0]


_SENTENCES = {
    "id": {"gap": "biasanya datang tiap {gap} hari", "once": "baru sekali datang",
           "last": "terakhir {days} hari lalu", "today": "terakhir datang hari ini",
           "chance": "kemungkinan kembali 2 minggu ini: {pct} %"},
    "en": {"gap": "usually comes every {gap} days", "once": "has visited once",
           "last": "last visit {days} days ago", "today": "last visit today",
           "chance": "chance of coming back in the next 2 weeks: {pct} %"},
}


def explain(pred: dict[str, Any], last_day: int | None, today: dt.date, lang: str = "id") -> str:
    """A sentence a shopkeeper understands, e.g. "biasanya datang tiap 9 hari; terakhir 23 hari
    lalu; kemungkinan kembali 2 minggu ini: 35 %"."""
    words = _SENTENCES["en" if lang == "en" else "id"]
    parts = []
    gap = pred.get("usual_gap_days")
    parts.append(words["gap"].format(gap=round(gap)) if gap else words["once"])
    if last_day is not None:
        days = (today - dt.date(1970, 1, 1)).days - last_day
        parts.append(words["today"] if days <= 0 else words["last"].format(days=days))
    parts.append(words["chance"].format(pct=round(100 * pred["p_visit_14d"])))
    return "; ".join(parts)
