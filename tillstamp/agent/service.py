"""The till's service: turns sales, scans, enrolments, redemptions and claims into events.

Every call that changes anything is one durable transaction: the result is returned only
after COMMIT. A refused call raises `Refused` with a reason code and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..loyalty import events as ev
from ..loyalty import rules, tokens
from ..loyalty.earning import compute_earn, eligible_lines, reversal_for_refund
from ..loyalty.events import Event, canonical, derived_id, new_id
from ..loyalty.kept import MemberState
from ..loyalty.offers import Tagging, offer_awards
from ..loyalty.phone import PhoneError, looks_like_phone, normalize_phone
from ..loyalty.program import Program
from ..loyalty.projections import MemberView, expiry_event, member_view
from ..loyalty.sale import Sale
from .keys import Keys
from .store import MemberRow, SaleRow, Store

KEPT_MEMBERS = 2000  # members whose kept state stays in memory (as many as the store's event memory)
_ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Refused(ValueError):
    """A request the till refuses; `reason` is a stable code, the message says why."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SaleResult:
    """What recording a sale did."""

    receipt: str
    key: str
    member: str | None
    stamps_awarded: int
    balance: int | None
    duplicate: bool
    claim: str | None = None
    claim_stamps: int = 0
    missions: tuple[str, ...] = ()
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result, as `tillstamp sale record` prints it."""
        d: dict[str, Any] = {
            "receipt": self.receipt,
            "member": self.member,
            "stamps_awarded": self.stamps_awarded,
            "balance": self.balance,
            "duplicate": self.duplicate,
        }
        if self.member is None:
            d["claim"] = self.claim
            d["claim_stamps"] = self.claim_stamps
        if self.missions:
            d["missions"] = list(self.missions)
        return d


@dataclass(frozen=True)
class Outcome:
    """The result of a refund, a redemption or a claim."""

    member: str | None
    stamps: int
    balance: int | None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"member": self.member, "stamps": self.stamps, "balance": self.balance, **self.detail}


@dataclass(frozen=True)
class Grant:
    """Head office's authorisation of one redemption against the merged balance."""

    id: str
    available: int


# What head office may authorise online: the offline caps of rule 7, and a local view that is
# short only because it has not seen the member's latest stamps from other tills.
ONLINE_REASONS = frozenset({"offline_cap_member", "offline_cap_terminal", "offline_too_long", "clock_skew",
                            "insufficient_balance"})


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Service:
    """One till's loyalty service over its store. Writes must come from one thread."""

    def __init__(
        self,
        store: Store,
        program: Program,
        keys: Keys,
        *,
        store_id: str,
        terminal_id: str,
        daily_receipts: bool = False,
        clock: Callable[[], dt.datetime] = _utcnow,
    ):
        self.store = store
        self.program = program
        self.keys = keys
        self.store_id = store_id
        self.terminal_id = terminal_id
        self.daily_receipts = daily_receipts
        self.clock = clock
        # Hooks for sync: extra events of a member known from head office (rule 6), and a
        # guard that may refuse an offline redemption (rule 7).
        self.remote_events: Callable[[str], Sequence[Event]] = lambda member: ()
        self.remote_watermark: Callable[[str], int] = lambda member: 0  # W of rule 6
        self.redeem_guard: Callable[[str, int], None] = lambda member, cost: None
        # Online authorisation by head office (docs/SYNC.md): (member, reward, cost) -> a Grant,
        # None when head office cannot be reached in time; raises Refused when it says no.
        self.authorize: Callable[[str, str, int], Grant | None] | None = None
        self.revoked: Callable[[tokens.MemberToken], bool] = lambda token: False
        # Claims of receipts refunded at other tills, learned from head office (a token id).
        self.claim_revoked: Callable[[str], bool] = lambda token_id: False
        # A member id head office merged into another (one phone enrolled twice): the survivor.
        self.alias_of: Callable[[str], str | None] = lambda member: None
        # Rule 9: expiry is not written off on a clock head office says is too far off.
        self.clock_trusted: Callable[[], bool] = lambda: True
        # Head office's segment tags and hints of a member (offers, the panel's hints).
        self.member_tags: Callable[[str], Tagging | None] = lambda member: None
        self._states: OrderedDict[str, MemberState] = OrderedDict()

    # -- helpers ------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        """The till's clock, always timezone-aware."""
        return self.clock()

    def _append(self, events: Iterable[Event]) -> list[Event]:
        try:
            return self.store.append(list(events), terminal=self.terminal_id, store=self.store_id)
        except rules.RuleError as e:
            raise Refused("invalid_event", str(e)) from None

    def member_events(self, member: str) -> list[Event]:
        """The member's events this till knows: head office's snapshot plus its own."""
        remote = list(self.remote_events(member))
        own = self.store.member_events(member)
        if not remote:
            return own
        # Rule 6: the snapshot holds this terminal's events up to W; add only newer ones,
        # and never one whose id is already there (HQ keeps one copy of a derived id).
        w = self.remote_watermark(member)
        seen = {e.id for e in remote}
        return remote + [e for e in own if e.seq > w and e.id not in seen]

    def balance(self, member: str) -> int:
        """The member's balance as this till shows it everywhere: the local view of rule 6."""
        if not self.remote_events(member):
            return self.store.balance(member)  # a till alone, or a member HQ has not sent: own events
        return sum(e.stamps for e in self.member_events(member))

    def _kept(self, member: str) -> MemberState:
        """The member's kept state, caught up with the history this till knows of them.

        It is the fold of exactly that history: when the history does not begin with the events
        it holds (a write rolled back, head office's snapshot changed, the program changed), it
        is folded again from the start (docs/DESIGN.md "A member's kept state")."""
        history = self.member_events(member)
        state = self._states.get(member)
        if state is None or state.program is not self.program or not state.follows(history):
            state = self._states[member] = MemberState(self.program, member)
            if len(self._states) > KEPT_MEMBERS:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(member)
        state.catch_up(history)
        return state

    def _expire(self, member: str, at: dt.datetime) -> MemberState:
        """Write off stamps that expired by `at` (inside a write); returns the member's kept state."""
        state = self._kept(member)
        if not self.clock_trusted():
            return state  # a wrong clock must not take stamps away; the next good write will
        due = state.due_expiries(at)
        if not due:
            return state
        out = [expiry_event(member, lot) for lot in due]
        out = [e for e in out if not self.store.has_event(e.id, member)]
        state.extend(self._append(out))
        return state

    def sale_key(self, receipt: str, at: dt.datetime) -> str:
        """The exactly-once key of a sale: store + receipt (+ business day if numbering restarts daily)."""
        if self.daily_receipts:
            day = at.astimezone(self.program.zone).date().isoformat()
            return f"{self.store_id}/{day}/{receipt}"
        return f"{self.store_id}/{receipt}"

    # -- identity -----------------------------------------------------------------------

    def identify(self, ref: str, *, learn: bool = True) -> MemberRow:
        """The member a QR payload, phone number or member id refers to; refused if unknown.
        An id head office merged into another gives the survivor."""
        row = self._identify(ref, learn=learn)
        into = self.alias_of(row.id)
        if into is None:
            return row
        survivor = self.store.member(into)
        if survivor is None:
            survivor = MemberRow(into, None, None, None, None, "merge", None)
            with self.store.write():
                if self.store.member(into) is None:
                    self.store.add_member(survivor, 0)
        return survivor

    def member_id(self, ref: str) -> str:
        """`identify(ref).id`; a member id the till has seen before is not read again."""
        text = ref.strip()
        upper = text.upper()
        # The same order of tests as `_identify`: a text that is also a token is read as one.
        if (_ULID.match(text) and not upper.startswith("TS") and tokens.CLAIM_PREFIX not in upper
                and self.store.has_member(upper) and self.alias_of(upper) is None):
            return upper
        return self.identify(ref).id

    def _identify(self, ref: str, *, learn: bool) -> MemberRow:
        text = ref.strip()
        upper = text.upper()
        if upper.startswith(tokens.MEMBER_PREFIX):
            try:
                tok = tokens.verify_member(text, self.keys.member_keys, self.now())
            except tokens.TokenError as e:
                raise Refused(f"token_{e.reason}", str(e)) from None
            if self.revoked(tok):
                raise Refused("token_revoked", "member card: revoked")
            row = self.store.member(tok.member)
            if row is None:
                if not learn:
                    raise Refused("unknown_member", f"member {tok.member}: not known at this till yet")
                # A valid card from another till: the signature vouches for the member.
                row = MemberRow(tok.member, None, None, None, None, "token", None)
                with self.store.write():
                    if self.store.member(tok.member) is None:
                        self.store.add_member(row, 0)
            return row
        if tokens.CLAIM_PREFIX in upper:
            raise Refused("not_a_member_card", "this QR is a receipt claim, not a member card")
        if upper.startswith("TS"):
            raise Refused("token_unknown_version", f"token: unknown version {text[:4]!r}")
        if _ULID.match(text):
            row = self.store.member(text.upper())
            if row is None:
                raise Refused("unknown_member", f"member {text}: not known at this till")
            return row
        if looks_like_phone(text):
            try:
                phone = normalize_phone(text)
            except PhoneError as e:
                raise Refused("invalid_phone", str(e)) from None
            row = self.store.member_by_phone(phone)
            if row is None:
                raise Refused("unknown_member", f"phone {phone}: no member with this number")
            return row
        raise Refused("unknown_member", f"{text[:40]!r} is not a member card, phone number or member id")

    def enroll(
        self,
        phone: str,
        name: str | None = None,
        email: str | None = None,
        birthday: str | None = None,
        consent: Iterable[str] = (),
    ) -> MemberRow:
        """Enrol a new member at this till."""
        try:
            e164 = normalize_phone(phone)
        except PhoneError as e:
            raise Refused("invalid_phone", str(e)) from None
        if name is not None and (not name.strip() or len(name) > 100):
            raise Refused("invalid_name", "name: expected 1 to 100 characters")
        if name is not None and (problem := rules.text_problem(name, 100)) is not None:
            raise Refused("invalid_name", f"name: {problem}")
        if email is not None and (len(email) > 200 or not _EMAIL.match(email) or rules.text_problem(email, 200)):
            raise Refused("invalid_email", f"email: {email!r} is not an email address")
        if birthday is not None:
            try:
                b = dt.date.fromisoformat(birthday)
            except ValueError:
                raise Refused("invalid_birthday", f"birthday: {birthday!r} is not a date like 1990-05-17") from None
            if b > self.now().date() or b.year < 1900:
                raise Refused("invalid_birthday", f"birthday: {birthday} is not a plausible birthday")
        channels = [c.strip().lower() for c in consent if c.strip()]
        unknown = [c for c in channels if c not in ev.CHANNELS]
        if unknown:
            raise Refused("invalid_consent", f"consent: unknown channel {unknown[0]!r} (use {', '.join(ev.CHANNELS)})")
        now = self.now()
        member_id = new_id()
        with self.store.write():
            existing = self.store.member_by_phone(e164)
            if existing is not None:
                raise Refused("already_enrolled", f"phone {e164}: already member {existing.id}")
            event = Event(
                id=new_id(),
                kind=ev.ENROLLED,
                at=now,
                member=member_id,
                body={"consent": {c: c in channels for c in ev.CHANNELS}, "via": "till"},
            )
            (placed,) = self._append([event])
            row = MemberRow(member_id, e164, name.strip() if name else None, email, birthday, "till", now.isoformat())
            self.store.add_member(row, placed.seq)
        return row

    def member_card(self, member: str, expires: dt.datetime | None = None) -> str:
        """A member-card token; only a till that holds the member-signing key can make one."""
        if self.keys.member_signing is None:
            raise Refused("no_signing_key", "member cards are issued by head office for this till")
        if self.store.member(member) is None:
            raise Refused("unknown_member", f"member {member}: not known at this till")
        return tokens.sign_member(self.keys.member_signing, member, self.now(), expires)

    def view(self, member: str) -> MemberView:
        """What the till shows about a member now: the view of their kept state, which is the
        fold of the history this till knows (so a regular's thousand visits are not folded again
        at every scan)."""
        with self.store.held():
            return self._kept(member).view(self.now())

    def view_at(self, member: str, history: Sequence[Event], at: dt.datetime) -> MemberView:
        """`member_view` of `history` at `at` (a receipt's: the member's events up to its sale),
        from the member's kept state when that holds exactly `history`, as right after the sale."""
        with self.store.held():
            state = self._states.get(member)
            if (state is not None and state.program is self.program and len(state.events) == len(history)
                    and state.follows(history)):
                return state.view(at)
        return member_view(self.program, member, history, at)

    # -- sales --------------------------------------------------------------------------

    def record_sale(self, sale: Sale) -> SaleResult:
        """Record a sale exactly once and award its stamps; a repeat answers `duplicate`."""
        key = self.sale_key(sale.receipt, sale.at)
        lines = [ln.to_dict() for ln in sale.lines]  # for the digest and the event, made once
        digest = _digest(sale, lines)
        member = self.member_id(sale.member) if sale.member else None
        with self.store.write():
            existing = self.store.sale(key)
            if existing is not None:
                return self._duplicate(existing, digest)
            new: list[Event] = []
            state = self._expire(member, sale.at) if member else None
            tier = state.tier_at(sale.at) if state else None
            earn = compute_earn(self.program, sale, tier)
            if earn.stamps > rules.MAX_SALE_STAMPS:
                raise Refused("too_many_stamps", f"receipt {sale.receipt}: this sale would earn {earn.stamps:,} "
                                                 f"stamps, more than {rules.MAX_SALE_STAMPS:,} per sale")
            eligible = {id(ln) for ln in eligible_lines(self.program, sale.lines)}
            body: dict[str, Any] = {
                "receipt": sale.receipt,
                "total": sale.total,
                "digest": digest,
                "lines": [{**d, "eligible": id(ln) in eligible} for ln, d in zip(sale.lines, lines, strict=True)],
                "zone": self.program.timezone,
            }
            if sale.discount:
                body["discount"] = sale.discount
            claim = None
            issued = self.now()
            if member is None and earn.stamps > 0:
                expires = issued + dt.timedelta(days=self.program.claim.valid_days)
                body["claim"] = {"stamps": earn.stamps, "issued": int(issued.timestamp()), "expires": int(expires.timestamp())}
            new.append(Event(new_id(), ev.SALE, sale.at, member, 0, key, body))
            if member and earn.stamps > 0:
                new.append(Event(derived_id("earn", key), ev.EARNED, sale.at, member, earn.stamps, key, earn.to_dict()))
            if member and state:
                new += state.due_missions(sale.at, new)
                if self.program.offers:  # docs/AGENT.md "Offers": the best offer, once per period
                    new += offer_awards(self.program, member, self.member_tags(member), state.events + new,
                                        sale.at, key, earn.stamps, self.now())
            placed = self._append(new)
            if state:
                state.extend(placed)
            if "claim" in body:
                claim = self._claim_payload(sale.receipt, body["claim"])
            # The balance this sale left, inside the transaction (no other writer can come
            # between): the kept state's sum of the member's history as this till shows it
            # (rule 6), the same sum `balance()` gives.
            balance = state.balance if state else None
        awarded = sum(e.stamps for e in placed if e.stamps > 0)
        return SaleResult(
            receipt=sale.receipt,
            key=key,
            member=member,
            stamps_awarded=awarded,
            balance=balance,
            duplicate=False,
            claim=claim,
            claim_stamps=earn.stamps if claim else 0,
            missions=tuple(e.body["mission"] for e in placed if e.kind == ev.MISSION),
            seq=placed[0].seq,
        )

    def _claim_payload(self, receipt: str, c: dict[str, int]) -> str:
        # Ed25519 signatures are deterministic, so a reprint gives the very same QR.
        return tokens.sign_claim(
            self.keys.terminal,
            store=self.store_id,
            terminal=self.terminal_id,
            receipt=receipt,
            stamps=c["stamps"],
            issued=dt.datetime.fromtimestamp(c["issued"], dt.UTC),
            expires=dt.datetime.fromtimestamp(c["expires"], dt.UTC),
            url=self.program.claim.url,
        )

    def claim_payload_for(self, key: str) -> str | None:
        """The claim QR of a recorded sale without a member (for reprints), if it has one."""
        e = self.store.sale_event(key)
        if e is None or "claim" not in e.body:
            return None
        return self._claim_payload(e.body["receipt"], e.body["claim"])

    def _duplicate(self, row: SaleRow, digest: str) -> SaleResult:
        if row.digest != digest:
            # Exactly once means the same sale once: another sale under a used receipt number
            # is refused, never answered as if it had been recorded.
            raise Refused("receipt_reused", f"receipt {row.receipt}: already recorded with other content "
                                            f"(seq {row.seq}); use a new receipt number")
        holder = row.member or row.claimed_by
        claim = self.claim_payload_for(row.key) if row.member is None and row.claimed_by is None else None
        return SaleResult(
            receipt=row.receipt,
            key=row.key,
            member=row.member,
            stamps_awarded=0,
            balance=self.balance(holder) if holder else None,
            duplicate=True,
            claim=claim,
            seq=row.seq,
        )

    def find_sale(self, receipt: str, day: str | None = None) -> SaleRow:
        """The recorded sale with this receipt number (and business day when numbering is daily)."""
        rows = self.store.sales_by_receipt(receipt, self.store_id)
        if day is not None:
            rows = [r for r in rows if f"/{day}/" in r.key]
        if not rows:
            raise Refused("unknown_sale", f"receipt {receipt}: no such sale at this till")
        return rows[-1]

    def refund(self, receipt: str, lines: dict[str, int] | None = None, *, day: str | None = None) -> Outcome:
        """Refund a sale in full (a void) or some lines; its stamps are taken back in proportion."""
        with self.store.write():
            row = self.find_sale(receipt, day)
            sale_event = self.store.sale_event(row.key)
            assert sale_event is not None
            sold: dict[str, int] = {}
            price: dict[str, int] = {}
            for ln in sale_event.body["lines"]:
                sold[ln["sku"]] = sold.get(ln["sku"], 0) + ln["qty"]
                price.setdefault(ln["sku"], ln["price"])
            if lines is None:
                amount = row.total - row.refunded
                qtys = {s: q - row.refunded_lines.get(s, 0) for s, q in sold.items()}
                qtys = {s: q for s, q in qtys.items() if q > 0}
                if amount <= 0:
                    raise Refused("already_refunded", f"receipt {receipt}: already refunded in full")
            else:
                if not lines:
                    raise Refused("invalid_refund", "refund: no lines given")
                for sku, qty in lines.items():
                    if sku not in sold:
                        raise Refused("invalid_refund", f"refund: {sku} is not on receipt {receipt}")
                    if qty <= 0:
                        raise Refused("invalid_refund", f"refund: quantity of {sku} must be > 0")
                    left = sold[sku] - row.refunded_lines.get(sku, 0)
                    if qty > left:
                        raise Refused("invalid_refund", f"refund: only {left} of {sku} left to refund")
                qtys = dict(lines)
                amount = min(sum(price[s] * q for s, q in qtys.items()), row.total - row.refunded)
            holder = row.member or row.claimed_by
            awarded = row.stamps
            back = reversal_for_refund(awarded, row.total, row.refunded, amount)
            now = self.now()
            if holder:
                self._expire(holder, now)
            # Capped by the balance this till shows (rule 6), which counts what the member
            # earned at other tills: a refund here takes back stamps earned anywhere.
            take = min(back, max(self.balance(holder), 0)) if holder else 0
            body = {"receipt": row.receipt, "amount": amount, "lines": qtys, "wanted": back, "uncollected": back - take}
            claim = self.claim_payload_for(row.key) if holder is None else None
            if claim is not None and row.refunded + amount >= row.total:
                # A void of a guest sale revokes its claim QR everywhere: head office tells the
                # tills, and takes back the stamps of a claim made elsewhere before it knew.
                body["claim_token"] = tokens.claim_token_id(claim)
            new = [Event(new_id(), ev.REFUNDED, now, holder, 0, row.key, body)]
            if take:
                new.append(
                    Event(derived_id("reverse", row.key, str(row.refunded)), ev.REVERSED, now, holder, -take, row.key,
                          {"receipt": row.receipt, "amount": amount})
                )
            self._append(new)
        return Outcome(
            holder, -take, self.balance(holder) if holder else None,
            {"receipt": row.receipt, "refunded": amount, "uncollected": back - take},
        )

    # -- rewards and claims -------------------------------------------------------------

    def redeem(self, member_ref: str, reward_id: str) -> Outcome:
        """Redeem a reward; refused when the balance, the tier or expiry says no."""
        try:
            reward = self.program.reward(reward_id)
        except KeyError:
            raise Refused("unknown_reward", f"reward {reward_id!r}: not in the catalogue") from None
        member = self.identify(member_ref).id
        grant = self._online_grant(member, reward.id, reward.cost)
        now = self.now()
        with self.store.write():
            self._expire(member, now)
            view = self.view(member)
            if not reward.allowed_for(view.tier.id):
                raise Refused("tier_not_allowed", f"reward {reward.id}: not for tier {view.tier.name}")
            body: dict[str, Any] = {"reward": reward.id, "name": reward.name, "cost": reward.cost}
            if grant is None:
                self._offline_check(member, reward.cost, view.balance, reward.id)
            else:
                body["grant"] = grant.id  # HQ releases its hold when this event arrives
            self._append([Event(new_id(), ev.REDEEMED, now, member, -reward.cost, reward.id, body)])
        detail = {"reward": reward.id, "name": reward.name, **({"authorized": "online"} if grant else {})}
        return Outcome(member, -reward.cost, self.balance(member), detail)

    def _offline_check(self, member: str, cost: int, balance: int, reward_id: str) -> None:
        """What a till decides alone: never above the local view, and within the caps of rule 7."""
        if balance < cost:
            raise Refused("insufficient_balance", f"reward {reward_id}: costs {cost} stamps, balance is {balance}")
        self.redeem_guard(member, cost)

    def _online_grant(self, member: str, reward_id: str, cost: int) -> Grant | None:
        """Head office's grant when the till alone would refuse and head office answers in time.

        Asked before the write transaction, so the database is never locked while the network
        is awaited; the wait is bounded by the authoriser's deadline (2 s). Unreachable: the
        till's own refusal stands (the offline caps apply)."""
        if self.authorize is None:
            return None
        view = self.view(member)
        if not self.program.reward(reward_id).allowed_for(view.tier.id):
            return None  # refused in the transaction; no stamps are held at HQ for nothing
        try:
            self._offline_check(member, cost, view.balance, reward_id)
            return None
        except Refused as e:
            if e.reason not in ONLINE_REASONS:
                raise
            refusal = e
        grant = self.authorize(member, reward_id, cost)
        if grant is None:
            raise refusal
        return grant

    def claim(self, payload: str, member_ref: str) -> Outcome:
        """Give a member the stamps of a receipt-claim QR, once."""
        try:
            tok = tokens.verify_claim(payload, self.keys.terminal_keys, self.now())
        except tokens.TokenError as e:
            raise Refused(f"token_{e.reason}", str(e)) from None
        member = self.identify(member_ref).id
        if self.claim_revoked(tok.token_id):
            raise Refused("refunded", f"claim: receipt {tok.receipt} was refunded")
        with self.store.write():
            used_by = self.store.claim_used(tok.token_id)
            if used_by is not None:
                raise Refused("token_already_claimed", f"claim: receipt {tok.receipt} was already claimed")
            stamps = tok.stamps
            body: dict[str, Any] = {
                "token": tok.token_id, "store": tok.store, "terminal": tok.terminal, "receipt": tok.receipt,
            }
            local = None
            if tok.terminal == self.terminal_id:
                for row in self.store.sales_by_receipt(tok.receipt, self.store_id):
                    sale_ev = self.store.sale_event(row.key)
                    issued = int(tok.issued.timestamp())
                    if sale_ev is not None and sale_ev.body.get("claim", {}).get("issued") == issued:
                        local = (row, sale_ev)
            if local is not None:
                row, sale_ev = local
                if row.refunded >= row.total:
                    raise Refused("refunded", f"claim: receipt {tok.receipt} was refunded")
                stamps -= reversal_for_refund(stamps, row.total, 0, row.refunded)
                body.update(sale=row.key, total=row.total - row.refunded, lines=sale_ev.body["lines"])
            now = self.now()
            state = self._expire(member, now)
            new = [Event(derived_id("claim", tok.token_id), ev.CLAIMED, now, member, stamps, tok.receipt, body)]
            new += state.due_missions(now, new)
            placed = self._append(new)
            state.extend(placed)
        return Outcome(
            member, sum(e.stamps for e in placed), self.balance(member),
            {"receipt": tok.receipt, "missions": [e.body["mission"] for e in placed if e.kind == ev.MISSION]},
        )


def _digest(sale: Sale, lines: list[dict[str, Any]] | None = None) -> str:
    d = sale.to_dict(lines)
    if not sale.at_given:
        del d["at"]  # the till's clock at input: a retry of the same sale must digest the same
    return hashlib.sha256(canonical(d)).hexdigest()[:32]
