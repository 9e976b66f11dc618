"""Property: for any sequence of sales, refunds, redemptions, claims, replays and time
passing, the balance is the sum of the ledger, never negative, a replay changes nothing,
and projections rebuilt from the ledger equal the live ones."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from support import EXAMPLE_PROGRAM, JAKARTA, Clock

from tillstamp.agent import ledger
from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Refused, Service
from tillstamp.agent.store import open_store
from tillstamp.loyalty.program import load_program
from tillstamp.loyalty.sale import parse_sale

PROGRAM = load_program(EXAMPLE_PROGRAM)
PHONES = ["081234567890", "081298765432", "085711112222"]
SKUS = [("KOPI-SUSU-AREN", "coffee"), ("LATTE", "coffee"), ("GAYO-250", "biji-kopi"), ("GIFT", "giftcard")]


class Till(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.clock = Clock(dt.datetime(2026, 1, 5, 8, 0, tzinfo=JAKARTA))
        self.store = open_store(":memory:")
        self.svc = Service(self.store, PROGRAM, Keys.generate("T1"), store_id="S", terminal_id="T1", clock=self.clock)
        self.members: list[str] = []
        self.sales: dict[str, dict] = {}
        self.claims: list[str] = []
        self.n = 0

    @rule(phone=st.sampled_from(PHONES))
    def enroll(self, phone):
        try:
            self.members.append(self.svc.enroll(phone).id)
        except Refused as e:
            assert e.reason == "already_enrolled"

    @rule(
        who=st.integers(0, 3),
        lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 4), st.integers(0, 120_000)), min_size=1, max_size=4),
    )
    def sale(self, who, lines):
        self.n += 1
        d = {
            "receipt": f"R-{self.n}",
            "at": self.clock().isoformat(),
            "lines": [{"sku": s, "category": c, "qty": q, "price": p} for (s, c), q, p in lines],
        }
        d["total"] = sum(ln["qty"] * ln["price"] for ln in d["lines"])
        if who < len(self.members):
            d["member"] = self.members[who]
        r = self.svc.record_sale(parse_sale(d, now=self.clock()))
        assert not r.duplicate and r.stamps_awarded >= 0
        self.sales[d["receipt"]] = d
        if r.claim:
            self.claims.append(r.claim)

    @precondition(lambda self: self.sales)
    @rule(data=st.data())
    def replay(self, data):
        receipt = data.draw(st.sampled_from(sorted(self.sales)))
        before = (self.store.count_events(), self.store.projection_snapshot())
        r = self.svc.record_sale(parse_sale(self.sales[receipt], now=self.clock()))
        assert r.duplicate and r.stamps_awarded == 0
        assert (self.store.count_events(), self.store.projection_snapshot()) == before

    @precondition(lambda self: self.sales)
    @rule(data=st.data(), partial=st.booleans())
    def refund(self, data, partial):
        receipt = data.draw(st.sampled_from(sorted(self.sales)))
        lines = None
        if partial:
            sku = self.sales[receipt]["lines"][0]["sku"]
            lines = {sku: 1}
        try:
            out = self.svc.refund(receipt, lines)
            assert out.stamps <= 0
        except Refused as e:
            assert e.reason in ("already_refunded", "invalid_refund")

    @precondition(lambda self: self.members)
    @rule(data=st.data(), reward=st.sampled_from([r.id for r in PROGRAM.rewards]))
    def redeem(self, data, reward):
        member = data.draw(st.sampled_from(self.members))
        try:
            self.svc.redeem(member, reward)
        except Refused as e:
            assert e.reason in ("insufficient_balance", "tier_not_allowed")

    @precondition(lambda self: self.members and self.claims)
    @rule(data=st.data())
    def claim(self, data):
        payload = data.draw(st.sampled_from(self.claims))
        member = data.draw(st.sampled_from(self.members))
        try:
            self.svc.claim(payload, member)
        except Refused as e:
            assert e.reason in ("token_already_claimed", "token_expired", "refunded")

    @rule(days=st.sampled_from([0.1, 1, 3, 40, 200]))
    def time_passes(self, days):
        self.clock.advance(days=days)

    @invariant()
    def balance_is_the_sum_of_the_ledger_and_never_negative(self):
        sums = self.store.ledger_sums()
        assert self.store.balances() == {m: b for m, b in self.store.balances().items()}
        for member, total in sums.items():
            assert total >= 0
            assert self.store.balance(member) == total
            assert self.svc.view(member).balance >= 0

    @invariant()
    def rebuilt_projections_equal_live_ones(self):
        assert ledger.rebuild_matches(self.store)

    def teardown(self):
        assert ledger.verify(self.store).ok
        self.store.close()


TestTill = Till.TestCase
TestTill.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
