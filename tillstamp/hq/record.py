"""The customer record (the "360"): everything support needs about one member, from the
read model and the member's events. One data function, so the CLI, the dashboard and
`/v1/crm/members/{id}` show the same thing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..loyalty import events as ev
from ..loyalty.program import Program
from ..loyalty.projections import member_view
from .readmodel import epoch_day
from .store import HqStore

WINDOWS = (30, 90, 365)
LAST_SALES = 50


class MemberNotFound(LookupError):
    """No member with that id, phone or external id."""


@dataclass(frozen=True)
class MemberRef:
    """How a member is looked up: exactly one of id, phone, external id."""

    member: str | None = None
    phone: str | None = None
    external: str | None = None


def e164(text: str) -> str:
    """A phone number in E.164 (Indonesian by default: 0812... is +62812...)."""
    import phonenumbers

    raw = text.strip()
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not raw.startswith(("+", "0")) and digits.startswith("62"):
        raw = "+" + digits
    try:
        num = phonenumbers.parse(raw, "ID")
    except phonenumbers.NumberParseException:
        raise MemberNotFound(f"phone {text!r} is not a phone number") from None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


def member_record(store: HqStore, program: Program | None, ref: MemberRef, now: dt.datetime) -> dict[str, Any]:
    """The whole customer as JSON-ready data; MemberNotFound if there is none."""
    phone = e164(ref.phone) if ref.phone else None
    row = store.crm_member(member=ref.member, phone=phone, external=ref.external)
    if row is None:
        what = (f"member {ref.member}" if ref.member else f"phone {phone}" if phone
                else f"external id {ref.external}")
        raise MemberNotFound(f"{what}: no such member at HQ")
    member = row["member"]
    zone = program.zone if program else dt.UTC
    today = epoch_day(now.astimezone(zone).date())
    windows = store.crm_windows(member, today, WINDOWS)
    events = store.member_events(member)
    figures: dict[str, Any] = {
        "first_visit": _date(row["first_day"]), "last_visit": _date(row["last_day"]),
        "visits": row["visits"], "spend": row["spend"],
        "fav_category": row["fav_category"], "fav_store": row["fav_store"],
        "usual_hour": row["usual_hour"], "usual_weekday": row["usual_weekday"],
    }
    for n in WINDOWS:
        figures[f"visits_{n}d"], figures[f"spend_{n}d"] = windows[n]
    out: dict[str, Any] = {
        "member": member,
        "profile": {k: row[k] for k in ("phone", "name", "email", "birthday", "external_id", "store",
                                        "enrolled_at")},
        "erased": bool(row["erased"]),
        "merged_into": row["merged_into"],
        "consent": {ch: bool(row[f"consent_{ch}"]) for ch in ev.CHANNELS},
        "figures": figures,
        "balance": row["balance"],
        "tier": row["tier"],
        "badges": _badges(row["badges"]),
        "card": None,
        "sales": store.crm_sales(member, LAST_SALES),
        "rewards": [{"at": e.at.isoformat(), "reward": e.body.get("reward", e.ref), "name": e.body.get("name"),
                     "cost": e.body.get("cost", -e.stamps), "store": e.store} for e in events if e.kind == ev.REDEEMED],
        "claims": [{"at": e.at.isoformat(), "receipt": e.body.get("receipt", e.ref), "store": e.body.get("store"),
                    "stamps": e.stamps} for e in events if e.kind == ev.CLAIMED],
    }
    out["predictions"] = _predictions(store, member, row["last_day"], now.astimezone(zone).date())
    if program is not None:
        view = member_view(program, member, events, now)
        out["tier"] = view.tier.id  # today's tier; the row holds the tier as of the last event
        out["card"] = {"filled": view.card_filled, "size": view.card_size, "full_cards": view.full_cards,
                       "expiring": [{"stamps": x.stamps, "at": x.at.isoformat()} for x in view.expiring]}
    return out


def _predictions(store: HqStore, member: str, last_day: int | None, today: dt.date) -> dict[str, Any] | None:
    """The member's newest predictions with the sentence a shopkeeper reads (id and en)."""
    from .predicted import explain

    pred = store.member_prediction(member)
    if pred is None:
        return None
    keep = ("p_alive", "p_visit_14d", "expected_visits_30d", "value_12m", "next_visit", "best_hour",
            "best_weekday", "churn_risk", "usual_gap_days", "skus", "categories", "reorder")
    return {**{k: pred[k] for k in keep}, "run": pred["run"],
            "sentence": {lang: explain(pred, last_day, today, lang) for lang in ("id", "en")}}


def _date(day: int | None) -> str | None:
    return None if day is None else (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def _badges(text: str) -> list[str]:
    import json

    return list(json.loads(text or "[]"))
