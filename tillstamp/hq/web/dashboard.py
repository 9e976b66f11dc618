"""The staff dashboard's data: one function per page, returning what the page shows. The HTML
page and its JSON twin (`?format=json`) are two renderings of the same dict.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ...loyalty.program import ProgramError
from .. import crm_store
from ..crm import Crm, Forbidden, NotFound
from ..segments import EPOCH
from ..staff import Principal
from . import store_web

PERIODS = (7, 30, 90)
FLOWS_LANDED = True  # the automations' flows (hq/store_flows.py, hq/flow_report.py)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def scope_for(who: Principal, store: str | None) -> str | None:
    """The store a page is about: a manager's own, whatever they ask; else the one asked for."""
    return who.scope if who.scope is not None else (store or None)


def overview(crm: Crm, who: Principal, *, store: str | None = None, days: int = 30) -> dict[str, Any]:
    """Members, visits, sales, stamps and their liability, repeat and redemption rates, tiers."""
    if days not in PERIODS:
        days = 30
    scope = scope_for(who, store)
    # Through today: a shop owner looks for today's sales (segments count whole days before D).
    asof = crm.asof(crm.asof().date + dt.timedelta(days=1))
    counts = store_web.member_counts(crm.store, asof.day - 30, asof.day, scope)
    series = store_web.daily(crm.store, asof.day - days, asof.day, scope)
    stamps = store_web.stamp_totals(crm.store, asof.start_utc(-days).isoformat(), asof.start_utc(0).isoformat(),
                                    scope)
    totals = store_web.member_totals(crm.store, scope)
    for point in series:
        point["date"] = (EPOCH + dt.timedelta(days=point["day"])).isoformat()
    return {
        "through": (asof.date - dt.timedelta(days=1)).isoformat(), "store": scope, "days": days,
        "stores": [] if who.scope is not None else store_web.store_ids(crm.store),
        "members": counts["members"], "active_30d": counts["active"],
        "new_members": sum(p["new_members"] for p in series),
        "visits": sum(p["visits"] for p in series), "sales": sum(p["sales"] for p in series),
        "stamps_issued": stamps["issued"], "stamps_redeemed": stamps["redeemed"],
        "stamps_outstanding": totals["outstanding"],
        "repeat_rate": _ratio(totals["repeaters"], totals["buyers"]),
        "redemption_rate": _ratio(stamps["redeemed"], stamps["issued"]),
        "tiers": totals["tiers"], "daily": series,
    }


def stores(crm: Crm, who: Principal) -> dict[str, Any]:
    """Every till's sync state: lag since last seen, clock offset, quarantined events, alerts."""
    now = crm.hq.clock()
    rows = [t for t in store_web.terminal_health(crm.store) if who.scope is None or t["store"] == who.scope]
    for t in rows:
        seen = dt.datetime.fromisoformat(t["last_seen"]) if t["last_seen"] else None
        t["lag_s"] = None if seen is None else max(0, int((now - seen).total_seconds()))
    return {"now": now.isoformat(), "terminals": rows, "alerts": store_web.recent_alerts(crm.store, who.scope)}


def members(crm: Crm, who: Principal, q: str) -> dict[str, Any]:
    """Members found by phone, name or id."""
    q = q.strip()[:100]
    return {"q": q, "members": crm.search(q, who=who, limit=50) if q else []}


def member(crm: Crm, who: Principal, member_id: str, lang: str = "id") -> dict[str, Any]:
    """The member 360: profile, balance, card, tier, badges, consents, history, predictions, messages."""
    from .. import store_flows

    rec = crm.member(member_id, who=who)
    for key, value in rec.get("profile", {}).items():  # the page reads name, phone... at the top
        rec.setdefault(key, value)
    program = crm.hq.program()
    size = program.card.size if program else 10
    rec["card"] = {"filled": int(rec["balance"]) % size if rec["balance"] > 0 else 0, "size": size}
    pred = rec.get("predictions")  # the record's newest predictions, with the sentence in id and en
    if pred is not None:
        pred = {**pred, "sentence": pred["sentence"].get(lang, pred["sentence"]["id"])}
    rec["prediction"] = pred
    rec["messages"] = store_flows.member_messages(crm.store, member_id)
    rec["can_erase"] = who.role == "owner"
    return rec


def segments(crm: Crm, who: Principal) -> dict[str, Any]:
    """Saved and predefined segments with their kept sizes (a chart each)."""
    out = []
    for s in crm.segments():
        out.append({**s, "sizes": crm_store.sizes(crm.store, s["name"])})
    return {"segments": out, "can_edit": who.can_edit_segments}


def flows(crm: Crm, who: Principal) -> dict[str, Any]:
    """Automation flows: on/off, sent, held out, and the uplift on visits with its 95 % interval."""
    from .. import store_flows
    from ..flow_report import flow_report

    out = []
    for f in store_flows.flows(crm.store):
        rep = flow_report(crm.store, f["name"])
        diff = rep["difference"]["visit_share"]
        out.append({"name": f["name"], "enabled": not f["paused"],
                    "sent": rep["treated"]["members"], "held_out": rep["held_out"]["members"],
                    "uplift": (f"{diff['difference']:+.1%} [{diff['ci95'][0]:+.1%}, {diff['ci95'][1]:+.1%}]"
                               if diff else "-")})
    return {"available": FLOWS_LANDED, "flows": out}


def programs(crm: Crm, who: Principal) -> dict[str, Any]:
    """The current program and the versions before it."""
    got = crm.store.program()
    return {"version": got[0] if got else None, "source": got[1] if got else None,
            "versions": store_web.program_versions(crm.store), "can_publish": who.role == "owner"}


def publish(crm: Crm, who: Principal, text: str) -> int:
    """Validate and publish a program (TOML or JSON text); ProgramError/ValueError say what is wrong."""
    from ..service import load_json_or_toml

    if who.role != "owner":
        raise Forbidden(f"a {who.role} cannot publish programs")
    try:
        source = load_json_or_toml(text)
    except ValueError as e:  # tomllib and json errors are ValueErrors
        raise ProgramError(str(e)) from None
    version = crm.hq.publish_program(source)
    crm_store.audit(crm.store, who.name, "program.publish", str(version), {}, crm.hq.clock())
    return version


def erase(crm: Crm, who: Principal, member_id: str) -> None:
    """Erase a member (owners only), written to the audit log."""
    if who.role != "owner":
        raise Forbidden(f"a {who.role} cannot erase members")
    crm.member(member_id, who=who)  # NotFound for an unknown id
    now = crm.hq.clock()
    crm.store.erase(member_id, now)
    crm_store.audit(crm.store, who.name, "member.erase", member_id, {}, now)


def audit(crm: Crm, who: Principal) -> dict[str, Any]:
    """The newest audit entries (owners only)."""
    if who.role != "owner":
        raise Forbidden(f"a {who.role} cannot read the audit log")
    return {"entries": crm_store.audit_log(crm.store, 200)}


__all__ = ["Forbidden", "NotFound", "audit", "erase", "flows", "member", "members", "overview", "programs",
           "publish", "segments", "stores"]
