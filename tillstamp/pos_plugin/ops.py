"""What the POS and the cashier panel ask of the till, as plain functions of the runtime.

Each function here runs on the agent's writer thread (the API submits it there): it may
read and write the store freely and returns JSON-ready data or raises `Refused`/`SaleError`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ..agent.receipts import card_text, mission_text
from ..agent.runtime import Runtime
from ..agent.service import Refused, SaleResult
from ..loyalty.sale import parse_sale

SCAN_REF = "@scan"


def resolve_member(rt: Runtime, ref: str) -> str:
    """A member reference as the POS sends it; `@scan` is the last member scanned at this till."""
    if ref.strip() == SCAN_REF:
        member = rt.last_scan.peek()
        if member is None:
            raise Refused("no_scan", "no member card was scanned at this till in the last "
                          f"{int(rt.last_scan.ttl)} seconds")
        return member
    return rt.till.service.identify(ref).id


@dataclass(frozen=True)
class Recorded:
    """A recorded sale: the POS's answer, and the sale whose receipt is still to be printed."""

    out: dict[str, Any]
    result: SaleResult | None = None  # None for a duplicate: nothing new to print


def record_sale(rt: Runtime, data: dict[str, Any]) -> Recorded:
    """Record a sale exactly once; the answer is the result of `sale record`.

    The receipt is listed as due in the sale's own commit (so a crash cannot lose it); the API
    hands it to `print_receipt` once the answer is out.
    """
    svc = rt.till.service
    scanned = None
    if isinstance(data.get("member"), str) and data["member"].strip() == SCAN_REF:
        scanned = resolve_member(rt, SCAN_REF)
        data = {**data, "member": scanned}
    sale = parse_sale(data, now=svc.now())
    result = rt.record_sale(sale)
    out = result.to_dict()
    if result.duplicate:
        return Recorded(out)
    if scanned is not None:
        rt.last_scan.take(scanned)
    rt.served(result.receipt, result.member, result.stamps_awarded, result.balance)
    rt.hub.publish("sale", receipt=result.receipt, member=result.member, total=sale.total,
                   stamps_awarded=result.stamps_awarded, balance=result.balance,
                   claim_stamps=result.claim_stamps, missions=list(result.missions))
    return Recorded(out, result)


def print_receipt(rt: Runtime, result: SaleResult) -> None:
    """Build a just-recorded sale's receipt and hand it to the spooler (after the answer)."""
    rt.print_after_sale(result.key, result.seq, result)


def refund(rt: Runtime, receipt: str, lines: dict[str, int] | None) -> dict[str, Any]:
    """Refund a sale in full or some lines; its stamps are taken back."""
    out = rt.till.service.refund(receipt, lines).to_dict()
    rt.hub.publish("refund", receipt=receipt, member=out["member"], stamps=out["stamps"],
                   balance=out["balance"])
    return out


def member_by_phone(rt: Runtime, phone: str) -> dict[str, Any]:
    """The member with this phone number."""
    svc = rt.till.service
    from ..loyalty.phone import looks_like_phone

    if not looks_like_phone(phone):
        raise Refused("invalid_phone", f"phone: {phone[:40]!r} is not a phone number")
    return member(rt, svc.identify(phone, learn=False).id)


def member(rt: Runtime, member_id: str) -> dict[str, Any]:
    """A member's balance, tier, card, missions and the rewards they can redeem now."""
    svc = rt.till.service
    row = svc.identify(member_id, learn=False)
    out = rt.till.member_json(row.id)
    view = svc.view(row.id)
    out["card_text"] = card_text(view.card_filled, view.card_size)
    kinds = {m.id: m.kind for m in rt.till.program.missions}
    for x in out["missions"]:
        x["text"] = mission_text(kinds.get(x["id"], ""), x["progress"], x["target"])
    out["measure"] = view.measure
    out["rewards"] = rewards(rt, row.id)
    return out


def enroll(rt: Runtime, fields: dict[str, Any]) -> dict[str, Any]:
    """Enrol a member; the panel then shows them."""
    svc = rt.till.service
    row = svc.enroll(fields["phone"], fields.get("name"), fields.get("email"), fields.get("birthday"),
                     fields.get("consent") or ())
    out: dict[str, Any] = {"member": row.id, "phone": row.phone, "name": row.name}
    if svc.keys.member_signing is not None:
        out["card"] = svc.member_card(row.id)
    # The new member is the current one: shown on the panel and used by the next "@scan" sale.
    rt.panel_member = row.id
    rt.last_scan.set(row.id)
    rt.hub.publish("enrol", member=row.id, name=row.name)
    return out


def rewards(rt: Runtime, member_ref: str | None = None) -> list[dict[str, Any]]:
    """The catalogue, marking what `member_ref` can redeem now when given."""
    svc = rt.till.service
    view = svc.view(resolve_member(rt, member_ref)) if member_ref else None
    out = []
    for r in rt.till.program.rewards:
        item: dict[str, Any] = {"id": r.id, "name": r.name, "cost": r.cost, "tiers": sorted(r.tiers)}
        if view is not None:
            item["can_redeem"] = r.allowed_for(view.tier.id) and view.balance >= r.cost
        out.append(item)
    return out


def redeem(rt: Runtime, member_ref: str, reward: str) -> dict[str, Any]:
    """Redeem a reward for a member."""
    member_id = resolve_member(rt, member_ref)
    out = rt.till.service.redeem(member_id, reward).to_dict()
    rt.hub.publish("redemption", member=member_id, reward=out.get("name", reward), stamps=out["stamps"],
                   balance=out["balance"])
    return out


def claim(rt: Runtime, payload: str, member_ref: str) -> dict[str, Any]:
    """Give a member the stamps of a receipt-claim QR, once."""
    member_id = resolve_member(rt, member_ref)
    out = rt.till.service.claim(payload, member_id).to_dict()
    if rt.pending_claim and rt.pending_claim.get("payload") == payload:
        rt.pending_claim = None
    rt.panel_member = member_id
    rt.hub.publish("claim", member=member_id, receipt=out.get("receipt"), stamps=out["stamps"],
                   balance=out["balance"])
    return out


def reprint(rt: Runtime, receipt: str) -> dict[str, Any]:
    """Queue a recorded sale's loyalty receipt again."""
    row = rt.till.service.find_sale(receipt)
    job = rt.reprint_job(row.seq)
    if not rt.queue_receipt(row.key, job):
        raise Refused("no_printer", "this till has no printer configured")
    rt.hub.publish("print", receipt=row.receipt, job=job)
    return {"receipt": row.receipt, "job": job, "queued": True}


def _local_time(at: str, zone: Any, today: dt.date) -> str:
    # The store's wall clock, as on the printed receipt; the date only when it is not today.
    local = dt.datetime.fromisoformat(at).astimezone(zone)
    return f"{local:%H:%M}" if local.date() == today else f"{local:%d/%m %H:%M}"


def panel_state(rt: Runtime, language: str = "id") -> dict[str, Any]:
    """Everything the cashier panel shows."""
    current = rt.panel_member
    shown = None
    if current is not None:
        try:
            shown = member(rt, current)
        except Refused:
            shown = None
    if shown is not None:
        shown["ready"] = [r for r in shown["rewards"] if r.get("can_redeem")]
        shown["display_name"] = shown["name"] or shown["member"][-6:]
        shown["hints"], shown["offers"] = member_hints(rt, shown["member"], language)
    zone = rt.till.program.zone
    today = dt.datetime.now(zone).date()
    sales: list[dict[str, Any]] = [{"receipt": s.receipt, "member": s.member or s.claimed_by, "total": s.total,
              "stamps": s.stamps, "refunded": s.refunded, "at": s.at,
              "time": _local_time(s.at, zone, today)}
             for s in rt.till.store.recent_sales(8)]
    for s in sales:
        if s["member"]:
            s["name"] = member_name(rt, s["member"])
    awards = [e for e in reversed(rt.hub.recent)
              if e["type"] in ("sale", "redemption", "claim", "refund", "enrol")][:8]
    served = dict(rt.panel_served) if rt.panel_served else None
    if served and served["member"]:
        served["name"] = member_name(rt, served["member"])
    return {
        "member": shown,
        "scanned": rt.last_scan.peek() == current if current else False,
        "clears_in": int(rt.panel.left() + 0.999) if shown else 0,
        "served": served,
        "pending_claim": rt.pending_claim,
        "sales": sales,
        "awards": awards,
        "health": rt.health(),
    }


# -- the cashier panel's own actions -----------------------------------------------------------


def identify(rt: Runtime, text: str) -> dict[str, Any]:
    """A scanned or typed code at the panel: a member (now current) or a receipt-claim offer."""
    return rt.identify_scan(text.strip(), "panel", learn=False)


def clear_panel(rt: Runtime) -> None:
    """The cashier is done with this customer: nobody is current any more."""
    current = rt.panel_member
    rt.panel_member = None
    if current is not None:
        rt.last_scan.take(current)
    rt.pending_claim = None
    rt.hub.publish("panel", cleared=True)


def print_slip(rt: Runtime, slip: Any) -> bool:
    """Spool a counter slip (a redemption, a member card); False when the till has no printer."""
    if rt.print_queue is None:
        return False
    import uuid

    from ..agent.runtime import printer_width
    from ..drivers.receipt import render_slip

    data = render_slip(slip, width=printer_width(rt.till.config.extra))
    rt.print_queue.submit(f"slip-{uuid.uuid4().hex[:12]}", data)
    return True


def shop_name(rt: Runtime) -> str:
    """The name printed and shown for this shop (its id when it has none)."""
    return rt.till.config.store_name or rt.till.config.store


def member_hints(rt: Runtime, member_id: str, language: str = "id") -> tuple[list[dict[str, str]],
                                                                            list[dict[str, str]]]:
    """The member's hints and the offers a sale now would give, as `{"kind", "text"}` (docs/AGENT.md)."""
    from ..agent import hints

    svc = rt.till.service
    now = svc.now()
    events = svc.member_events(member_id)
    tagging = svc.member_tags(member_id)
    view = svc.view(member_id)
    lines = hints.member_hints(svc.program, view, tagging, now, language)
    offers = hints.offer_hints(svc.program, member_id, tagging, events, now, language)
    return ([{"kind": h.kind, "text": h.text} for h in lines], [{"kind": h.kind, "text": h.text} for h in offers])


def member_name(rt: Runtime, member_id: str) -> str:
    """A member's name, or the end of their id when they gave none."""
    row = rt.till.store.member(member_id)
    return row.name if row is not None and row.name else member_id[-6:]


def card_png(rt: Runtime, member_id: str) -> bytes:
    """A member's card (QR with shop, name and id under it) as PNG."""
    from ..agent.card import MemberCard
    from ..agent.card import card_png as draw

    row = rt.till.service.identify(member_id, learn=False)
    payload = rt.till.service.member_card(row.id)
    return draw(MemberCard(payload, shop_name(rt), row.name or "", row.id))


def card_slip(rt: Runtime, member_id: str, title: str) -> Any:
    """A new member's card as a counter slip."""
    from ..drivers.receipt import Slip

    row = rt.till.service.identify(member_id, learn=False)
    return Slip(shop_name(rt), title, rt.till.service.now().astimezone(rt.till.program.zone),
                row.name or "", (row.id,), rt.till.service.member_card(row.id))
