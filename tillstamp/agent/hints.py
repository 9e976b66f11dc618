"""What the till says about a member in a line or two: head office's hints, the till's own view,
and the offer that applies; and the one personal line a receipt prints.

Card and tier come from the till's local view (it has every stamp it knows of, fresher than
head office's last refresh); lapsed days, birthday, the usual product and reorders come from
head office's hints, and only while they are not older than the program's `max_tag_age_days`
(the promise that bounds offers bounds what the cashier is told too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ..loyalty.events import Event
from ..loyalty.offers import Tagging, applicable
from ..loyalty.program import Program
from ..loyalty.projections import MemberView

ALMOST_FULL = 2  # stamps missing to fill the card, as at head office (hq/tags.py)
LAPSED_MIN_DAYS = 14
TIER_NEAR = 10  # percent of the next tier's threshold

WORDS: dict[str, dict[str, str]] = {
    "id": {
        "birthday": "Ulang tahun minggu ini",
        "card": "{n} stempel lagi: {reward}",
        "lapsed": "Lama tidak datang: {n} hari",
        "usual": "Biasanya: {name}",
        "reorder": "Waktunya beli lagi: {category}",
        "tier": "{n} stempel lagi ke {tier}",
        "offer": "Penawaran: {name}",
        "offer_given": "{name}: +{n} stempel",
        "happy_birthday": "Selamat ulang tahun{name}!",
    },
    "en": {
        "birthday": "Birthday this week",
        "card": "{n} more stamps: {reward}",
        "lapsed": "Not seen for {n} days",
        "usual": "Usually: {name}",
        "reorder": "Time to buy again: {category}",
        "tier": "{n} more stamps to {tier}",
        "offer": "Offer: {name}",
        "offer_given": "{name}: +{n} stamps",
        "happy_birthday": "Happy birthday{name}!",
    },
}


@dataclass(frozen=True)
class Hint:
    """One thing to tell the cashier: `kind` for styling and tests, `text` in the panel's language."""

    kind: str
    text: str


def member_hints(program: Program, view: MemberView, tagging: Tagging | None, now: dt.datetime,
                 language: str = "id") -> list[Hint]:
    """The member's hints, most useful first: birthday, card almost full, lapsed, usual, reorder, tier."""
    w = WORDS.get(language, WORDS["id"])
    out: list[Hint] = []
    hints = tagging.hints if tagging is not None and tagging.fresh(program, now) else {}
    today = now.astimezone(program.zone).date()
    if hints.get("birthday_week"):
        out.append(Hint("birthday", w["birthday"]))
    missing = view.card_size - view.card_filled
    if missing <= ALMOST_FULL:
        reward = next((r.name for r in program.rewards if r.id == program.card.reward), program.card.reward)
        out.append(Hint("card", w["card"].format(n=missing, reward=reward)))
    last = _date(hints.get("last_visit"))
    if last is not None:
        if view.last_visit is not None:  # a visit this till knows of, after head office's refresh
            last = max(last, view.last_visit.astimezone(program.zone).date())
        days = (today - last).days
        if days >= LAPSED_MIN_DAYS:
            out.append(Hint("lapsed", w["lapsed"].format(n=days)))
    usual = hints.get("usual")
    if isinstance(usual, dict) and (usual.get("name") or usual.get("sku")):
        out.append(Hint("usual", w["usual"].format(name=usual.get("name") or usual.get("sku"))))
    reorder = hints.get("reorder")
    if isinstance(reorder, dict) and reorder.get("category"):
        out.append(Hint("reorder", w["reorder"].format(category=reorder["category"])))
    if view.next_tier is not None and 0 < view.to_next_tier <= max(1, view.next_tier.threshold * TIER_NEAR // 100):
        out.append(Hint("tier", w["tier"].format(n=view.to_next_tier, tier=view.next_tier.name)))
    return out


def offer_hints(program: Program, member: str, tagging: Tagging | None, events: Sequence[Event],
                now: dt.datetime, language: str = "id") -> list[Hint]:
    """The offers the member would get on a sale now, as lines for the panel."""
    w = WORDS.get(language, WORDS["id"])
    return [Hint("offer", w["offer"].format(name=o.name))
            for o in applicable(program, member, tagging, events, now, now)]


def personal_line(program: Program, name: str, offer: Event | None, view: MemberView, birthday: str | None,
                  day: dt.date, language: str = "id") -> str | None:
    """The receipt's one personal line: the offer this sale gave, else a birthday within the sale's
    week (from the member's own row), else the card almost full; None when there is nothing.

    Only the ledger and the member row go in, never head office's tags, so a reprint prints the
    very same line whatever head office has learned since."""
    w = WORDS.get(language, WORDS["id"])
    if offer is not None:
        return w["offer_given"].format(name=offer.body.get("name") or offer.body.get("offer"), n=offer.stamps)
    born = _date(birthday)
    if born is not None and any((born.month, born.day) == ((day + dt.timedelta(k)).month, (day + dt.timedelta(k)).day)
                                for k in range(-3, 4)):
        return w["happy_birthday"].format(name=f", {name}" if name else "")
    missing = view.card_size - view.card_filled
    if missing <= ALMOST_FULL:
        reward = next((r.name for r in program.rewards if r.id == program.card.reward), program.card.reward)
        return w["card"].format(n=missing, reward=reward)
    return None


def _date(text: object) -> dt.date | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None
