"""The customer's side at HQ, without HTTP: a receipt claim, one-time codes, the member's own
card, consents, data export and erasure.

A claim made on the phone is the event a till would write: kind `stamps.claimed` with id
`derived_id("claim", token_id)`, so a receipt claimed on the phone and also at a till that
was offline is one claim once both reach HQ (the second copy of the id is kept out).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...loyalty import events as ev
from ...loyalty import tokens
from ...loyalty.events import Event, derived_id, new_id
from ...loyalty.phone import PhoneError, normalize_phone
from ...loyalty.program import Program
from ...loyalty.projections import due_missions, member_view
from .. import crm_store
from ..service import Hq
from . import store_web
from .auth import RateLimiter, digest
from .codes import CodeSender, CodeSendError

CODE_TTL = dt.timedelta(minutes=10)
CODE_TRIES = 5
CODES_PER_PHONE = 3  # per CODE_WINDOW
CODES_PER_ADDRESS = 10
CHECKS_PER_ADDRESS = 30
CODE_WINDOW = dt.timedelta(minutes=30)


class CustomerError(Exception):
    """A refusal shown to the customer: `code` picks the sentence (in their language)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(detail or code)
        self.code = code


@dataclass(frozen=True)
class ClaimInfo:
    """What the claim page shows about a receipt."""

    token: str
    store: str
    terminal: str
    receipt: str
    stamps: int
    local_date: str
    expires: str
    status: str  # open | claimed

    def to_json(self) -> dict[str, Any]:
        """The claim page's JSON twin."""
        return {"store": self.store, "receipt": self.receipt, "stamps": self.stamps, "date": self.local_date,
                "expires": self.expires, "status": self.status}


class Customer:
    """Claims, codes and the member's own page over one HQ."""

    def __init__(self, hq: Hq, sender: CodeSender, *, clock: Callable[[], dt.datetime] | None = None):
        self.hq = hq
        self.store: Any = hq.store
        self.sender = sender
        self.clock = clock or hq.clock
        self.per_phone = RateLimiter(CODES_PER_PHONE, CODE_WINDOW, self.clock)
        self.per_address = RateLimiter(CODES_PER_ADDRESS, CODE_WINDOW, self.clock)
        self.checks = RateLimiter(CHECKS_PER_ADDRESS, CODE_WINDOW, self.clock)

    def program(self) -> Program:
        """The current program (a customer page needs one)."""
        prog = self.hq.program()
        if prog is None:
            raise CustomerError("no_program")
        return prog

    # -- one-time codes ------------------------------------------------------------------

    def request_code(self, phone_text: str, address: str) -> str:
        """Send a fresh 6-digit code to a phone, whoever holds it: the answer is the same for
        members and strangers. Returns the phone in E.164."""
        try:
            phone = normalize_phone(phone_text)
        except PhoneError:
            raise CustomerError("bad_phone") from None
        if not self.per_address.allow(address) or not self.per_phone.allow(phone):
            raise CustomerError("too_many")
        code = f"{secrets.randbelow(1_000_000):06d}"
        now = self.clock()
        store_web.put_code(self.store, phone, digest(phone + ":" + code), now, now + CODE_TTL)
        try:
            self.sender.send_code(phone, code)
        except CodeSendError as e:
            raise CustomerError("send_failed", str(e)) from None
        return phone

    def check_code(self, phone_text: str, code: str, address: str) -> str:
        """Accept the code once and return the phone (E.164); CustomerError('bad_code') when it is
        wrong, used, expired or out of tries."""
        if not self.checks.allow(address):
            raise CustomerError("too_many")
        try:
            phone = normalize_phone(phone_text)
        except PhoneError:
            raise CustomerError("bad_phone") from None
        code = code.strip()
        if len(code) != 6 or not code.isdigit():
            raise CustomerError("bad_code")
        if not store_web.try_code(self.store, phone, digest(phone + ":" + code), self.clock(), CODE_TRIES):
            raise CustomerError("bad_code")
        return phone

    # -- receipt claims ------------------------------------------------------------------

    def _verify(self, text: str) -> tokens.ClaimToken:
        try:
            term = self.store.terminal(tokens.claim_terminal(text))
            keys = {term.id: tokens.public_from_bytes(bytes.fromhex(term.public_key))} if term else {}
            return tokens.verify_claim(text, keys, self.clock())
        except tokens.TokenError as e:
            raise CustomerError(f"claim_{e.reason}", str(e)) from None

    def claim_info(self, text: str) -> ClaimInfo:
        """The receipt behind a claim QR; CustomerError when it is forged, expired or refunded."""
        tok = self._verify(text)
        if store_web.refunded_of(self.store, tok.store, tok.terminal, tok.receipt):
            raise CustomerError("claim_refunded")
        zone = self.program().zone
        claimed = store_web.event_exists(self.store, derived_id("claim", tok.token_id))
        return ClaimInfo(text, tok.store, tok.terminal, tok.receipt, tok.stamps,
                         tok.issued.astimezone(zone).date().isoformat(),
                         tok.expires.astimezone(zone).date().isoformat(), "claimed" if claimed else "open")

    def claim(self, text: str, phone: str) -> tuple[str, int]:
        """Credit a receipt's stamps to the member holding `phone` (enrolling one if none does),
        once: (member, stamps credited). CustomerError('claim_used') when it was claimed before."""
        info = self.claim_info(text)
        tok = self._verify(text)
        claim_id = derived_id("claim", tok.token_id)
        if info.status == "claimed":
            raise CustomerError("claim_used")
        program = self.program()
        now = self.clock()
        member = store_web.member_by_phone(self.store, phone)
        new: list[Event] = []
        pii: list[dict[str, Any]] = []
        history: list[Event] = []
        if member is None:
            member = new_id()
            new.append(Event(new_id(), ev.ENROLLED, now, member,
                             body={"consent": {c: False for c in ev.CHANNELS}, "via": "phone"}))
            pii.append({"id": member, "phone": phone, "enrolled_at": now.isoformat()})
        else:
            history = self.store.member_events(member)
        body = {"token": tok.token_id, "store": tok.store, "terminal": tok.terminal, "receipt": tok.receipt,
                "via": "phone"}
        claim_ev = Event(claim_id, ev.CLAIMED, now, member, tok.stamps, tok.receipt, body)
        new.append(claim_ev)
        new += due_missions(program, member, history + new, now)
        flags = store_web.append_hq_events(self.store, new, tok.store, now, pii)
        if not flags[new.index(claim_ev)]:
            raise CustomerError("claim_used")
        return member, sum(e.stamps for e, f in zip(new, flags, strict=True) if f)

    # -- the member's own page -----------------------------------------------------------

    def member_of(self, phone: str) -> str | None:
        """The member holding a phone, if any."""
        return store_web.member_by_phone(self.store, phone)

    def card(self, member: str) -> dict[str, Any]:
        """Everything the member page shows: QR card, balance, card, tier, missions, rewards, visits, consents."""
        program = self.program()
        now = self.clock()
        events = self.store.member_events(member)
        view = member_view(program, member, events, now)
        consent = {c: False for c in ev.CHANNELS}
        for e in events:
            if e.kind in (ev.ENROLLED, ev.CONSENT) and isinstance(e.body.get("consent"), dict):
                consent.update({k: bool(v) for k, v in e.body["consent"].items() if k in consent})
        visits: list[dict[str, Any]] = []
        for e in reversed(events):
            if e.kind in (ev.EARNED, ev.CLAIMED) and len(visits) < 10:
                visits.append({"at": e.at.astimezone(program.zone).strftime("%Y-%m-%d %H:%M"),
                               "store": e.body.get("store") or e.store, "stamps": e.stamps,
                               "receipt": e.ref})
        token = tokens.sign_member(self.hq.signing_key(), member, now)
        return {
            "member": member, "card_token": token, "balance": view.balance,
            "card": {"filled": view.card_filled, "size": view.card_size, "full": view.full_cards},
            "tier": {"id": view.tier.id, "name": view.tier.name},
            "next_tier": {"id": view.next_tier.id, "name": view.next_tier.name, "to_go": view.to_next_tier}
            if view.next_tier else None,
            "missions": [{"id": m.id, "name": m.name, "progress": m.progress, "target": m.target, "done": m.done}
                         for m in view.missions],
            "badges": list(view.badges),
            "rewards": [{"id": r.id, "name": r.name, "cost": r.cost} for r in program.rewards
                        if r.cost <= view.balance and r.allowed_for(view.tier.id)],
            "visits": visits, "consent": consent,
        }

    def set_consent(self, member: str, consent: dict[str, bool]) -> None:
        """Record the member's consent per channel as an HQ event (tills get it on their next pull)."""
        now = self.clock()
        body = {"consent": {c: bool(consent.get(c, False)) for c in ev.CHANNELS}, "via": "phone"}
        store_web.append_hq_events(self.store, [Event(new_id(), ev.CONSENT, now, member, body=body)], "HQ", now)

    def export(self, member: str) -> dict[str, Any]:
        """Everything HQ holds about the member, as JSON ("download my data")."""
        return {"member": member, "profile": store_web.profile(self.store, member),
                "events": [e.to_wire() for e in self.store.member_events(member)],
                "exported_at": self.clock().isoformat()}

    def erase(self, member: str, phone: str) -> None:
        """Erase the member's personal data at HQ and, through the feed, at every till."""
        now = self.clock()
        self.store.erase(member, now)
        crm_store.audit(self.store, "customer", "member.erase", member, {"via": "phone"}, now)
        store_web.delete_sessions_of(self.store, "member", phone)
