"""Offers for a head-office segment, given offline at the till (pure).

Head office sends each member's segment tags with the time they were computed (`as_of`); a
program's `[[earn.offer]]` names a segment. At a sale, the till gives the best offer whose
segment the member is tagged with, if the tags are not older than `max_tag_age_days` and the
member has not had that offer in this period. The award is an ordinary `stamps.earned` event
whose id comes from (member, offer, period), so two tills that give the same offer offline
produce one event and head office keeps one (docs/AGENT.md, "Offers").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import events as ev
from .events import Event, derived_id
from .program import Offer, Program


@dataclass(frozen=True)
class Tagging:
    """A member's segment tags and hints from head office, and the time they hold as of."""

    tags: frozenset[str]
    hints: dict[str, Any] = field(default_factory=dict)
    as_of: dt.datetime | None = None

    def age_days(self, now: dt.datetime) -> float | None:
        """How old the tags are at `now`, in days (None: unknown age)."""
        if self.as_of is None:
            return None
        return (now - self.as_of).total_seconds() / 86400

    def fresh(self, program: Program, now: dt.datetime) -> bool:
        """True when the tags may be used for an offer: not older than `max_tag_age_days`."""
        age = self.age_days(now)
        return age is not None and age <= program.max_tag_age_days


def offer_period(offer: Offer, local: dt.datetime) -> str:
    """Which period a local moment falls in for an offer: ISO week, month, or the whole program."""
    if offer.per == "week":
        y, w, _ = local.isocalendar()
        return f"{y}-W{w:02d}"
    if offer.per == "month":
        return f"{local.year}-{local.month:02d}"
    return "program"


def offer_event_id(member: str, offer: Offer, period: str) -> str:
    """The award's id: the same at every till for one member, offer and period."""
    return derived_id("offer", member, offer.id, period)


def applicable(program: Program, member: str, tagging: Tagging | None, history: Sequence[Event],
               at: dt.datetime, now: dt.datetime | None = None) -> list[Offer]:
    """The offers the member may get at `at`: tagged (tags fresh at `now`), in the offer's window,
    and not given yet in this period (an award with the period's id is in `history`)."""
    if tagging is None or not program.offers or not tagging.fresh(program, now or at):
        return []
    local = at.astimezone(program.zone)
    given = {e.id for e in history if e.kind == ev.EARNED and e.body.get("offer")}
    return [o for o in program.offers
            if o.segment in tagging.tags and (o.window is None or o.window.active(local))
            and offer_event_id(member, o, offer_period(o, local)) not in given]


def offer_awards(program: Program, member: str, tagging: Tagging | None, history: Sequence[Event],
                 sale_at: dt.datetime, sale_key: str, earned: int, now: dt.datetime | None = None) -> list[Event]:
    """The award of the best applicable offer for a sale that earned `earned` stamps (at most one
    per sale, like bonuses: offers do not stack); empty when none applies or it gives nothing."""
    best: tuple[int, Offer] | None = None
    for o in applicable(program, member, tagging, history, sale_at, now):
        extra = o.extra(earned)
        if extra > 0 and (best is None or extra > best[0]):
            best = (extra, o)
    if best is None or tagging is None:
        return []
    extra, offer = best
    period = offer_period(offer, sale_at.astimezone(program.zone))
    body = {"offer": offer.id, "name": offer.name, "segment": offer.segment, "period": period,
            "tags_as_of": tagging.as_of.astimezone(dt.UTC).isoformat() if tagging.as_of else None}
    return [Event(offer_event_id(member, offer, period), ev.EARNED, sale_at, member, extra, sale_key, body)]
