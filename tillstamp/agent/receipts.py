"""The loyalty receipt of a recorded sale: a drivers `Receipt` built from the ledger and the
member's view, plus the print-job id that makes a queued receipt print once.

Everything here reads the store, so it runs on the agent's writer thread like every other
Service call.
"""

from __future__ import annotations

import re
from typing import Literal

from tillstamp.drivers.receipt import ExpiringStamps, MissionProgress, Receipt, SaleLine

from .service import Refused, SaleResult, Service

Language = Literal["id", "en"]

CAPTIONS: dict[str, dict[str, str]] = {
    "id": {"claim": "Scan untuk klaim {n} stempel", "card": "Kartu member kamu",
           "claimed": "Stempel sudah diklaim"},
    "en": {"claim": "Scan to claim {n} stamps", "card": "Your member card",
           "claimed": "Stamps already claimed"},
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def card_text(filled: int, size: int) -> str:
    """A stamp card as the panel draws it: `●●●●●○○○○○ 5/10`."""
    filled = max(0, min(filled, size))
    return f"{'●' * filled}{'○' * (size - filled)} {filled}/{size}"


def job_id(kind: str, seq: int, attempt: int = 0) -> str:
    """A print-job id safe for the spool: the sale's ledger seq names its receipt."""
    base = f"{kind}-{seq}"
    return base if attempt == 0 else f"{base}-{attempt}"


def safe_name(text: str) -> str:
    """`text` with every character a file name or job id cannot hold replaced by `_`."""
    return _UNSAFE.sub("_", text)[:100]


def build_receipt(
    service: Service,
    key: str,
    *,
    store_name: str,
    language: Language = "id",
    result: SaleResult | None = None,
) -> Receipt:
    """The loyalty receipt of the sale keyed `key` (its `result` when just recorded, else a reprint)."""
    row = service.store.sale(key)
    event = service.store.sale_event(key)
    if row is None or event is None:
        raise Refused("unknown_sale", f"sale {key}: not recorded at this till")
    body = event.body
    zone = service.program.zone
    lines = tuple(
        SaleLine(ln.get("name") or ln["sku"], ln["qty"], ln["price"], ln["qty"] * ln["price"])
        for ln in body["lines"]
    )
    words = CAPTIONS[language]
    member = row.member or row.claimed_by
    stamps = result.stamps_awarded if result is not None else row.stamps
    fields: dict[str, object] = {}
    qr_payload = qr_caption = None
    if member is not None:
        fields.update(_member_fields(service, member))
        if row.member is not None and service.keys.member_signing is not None:
            qr_payload, qr_caption = service.member_card(member), words["card"]
    else:
        claim = result.claim if result is not None and result.claim else service.claim_payload_for(key)
        if claim:
            n = (result.claim_stamps if result is not None and result.claim_stamps else
                 body.get("claim", {}).get("stamps", 0))
            qr_payload, qr_caption = claim, words["claim"].format(n=n)
            stamps = 0  # nobody earned them yet: the QR carries them
    return Receipt(
        store_name=store_name,
        receipt_no=row.receipt,
        at=event.at.astimezone(zone),
        lines=lines,
        total=row.total,
        stamps_earned=stamps if member else 0,
        qr_payload=qr_payload,
        qr_caption=qr_caption,
        language=language,
        **fields,  # type: ignore[arg-type]
    )


def _member_fields(service: Service, member: str) -> dict[str, object]:
    row = service.store.member(member)
    view = service.view(member)
    zone = service.program.zone
    return {
        "member_name": (row.name if row and row.name else member[-6:]),
        "balance": view.balance,
        "card_filled": view.card_filled,
        "card_size": view.card_size,
        "tier": view.tier.name,
        "next_tier": view.next_tier.name if view.next_tier else None,
        "to_next_tier": view.to_next_tier if view.next_tier else None,
        "missions": tuple(MissionProgress(m.name, m.progress, m.target)
                          for m in view.missions if not m.done and m.progress > 0),
        "expiring": tuple(ExpiringStamps(x.stamps, x.at.astimezone(zone).date()) for x in view.expiring),
    }

