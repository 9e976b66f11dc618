"""How many stamps a sale earns: visit, spend and item rules, bonuses, tier multiplier."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .program import Program, Tier
from .sale import Sale, SaleLine

_ONE = Fraction(1)


@dataclass(frozen=True)
class Earn:
    """Stamps a sale earns and why; `eligible` is the spend that counted (minor units)."""

    stamps: int
    base: int
    multiplier: Fraction
    eligible: int
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready breakdown, kept in the earn event for receipts and audits."""
        return {
            "base": self.base,
            "multiplier": str(self.multiplier),
            "eligible": self.eligible,
            "reasons": list(self.reasons),
        }


def eligible_lines(program: Program, lines: tuple[SaleLine, ...]) -> list[SaleLine]:
    """Lines that may earn: not excluded by SKU or category, not paid with stamps."""
    ex = program.exclusions
    return [
        ln
        for ln in lines
        if not ln.paid_with_stamps and ln.sku not in ex.skus and ln.category not in ex.categories
    ]


def compute_earn(program: Program, sale: Sale, tier: Tier | None = None) -> Earn:
    """Stamps earned by `sale` for a member of `tier` (None: the lowest tier)."""
    lines = eligible_lines(program, sale.lines)
    gross = sum(ln.amount for ln in sale.lines)
    eligible = sum(ln.amount for ln in lines)
    if sale.discount and gross:
        # A discount lowers what counts, in proportion to the eligible share of the sale.
        eligible -= sale.discount * eligible // gross
    reasons: list[str] = []
    base = 0
    if program.visit and lines and eligible >= program.visit.min_spend and program.visit.stamps:
        base += program.visit.stamps
        reasons.append(f"visit:{program.visit.stamps}")
    if program.spend:
        s = program.spend
        n = (eligible // s.every) * s.stamps
        if s.cap:
            n = min(n, s.cap)
        if n:
            base += n
            reasons.append(f"spend:{n}")
    for ln in lines:
        for rule in program.items:
            if rule.matches(ln.sku, ln.category):
                base += rule.stamps * ln.qty
                reasons.append(f"item:{ln.sku}:{rule.stamps * ln.qty}")
                break  # the first matching rule wins, so a line never earns twice
    local = sale.at.astimezone(program.zone)
    bonus = _ONE
    for b in program.bonuses:
        if b.active(local) and b.multiplier > bonus:
            bonus = b.multiplier  # bonuses do not stack: the best one applies
            reasons.append(f"bonus:{b.name}")
    tier = tier or program.tiers[0]
    if tier.multiplier == 1:
        multiplier = bonus
    else:
        multiplier = bonus * tier.multiplier
        reasons.append(f"tier:{tier.id}")
    # floor(base * n/d) in integers: exact, without a Fraction product per sale.
    stamps = base if multiplier is _ONE else base * multiplier.numerator // multiplier.denominator
    return Earn(stamps=stamps, base=base, multiplier=multiplier, eligible=eligible, reasons=tuple(reasons))


def reversal_for_refund(awarded: int, original_amount: int, refunded_before: int, refunded_now: int) -> int:
    """Stamps to take back for a refund of `refunded_now`, in proportion to the sale.

    Computed on the cumulative refunded amount so that several partial refunds add up
    exactly to a full one, whatever the rounding.
    """
    if original_amount <= 0:
        return awarded if refunded_now else 0
    total_after = min(original_amount, refunded_before + refunded_now)
    back_after = (awarded * total_after + original_amount // 2) // original_amount
    back_before = (awarded * refunded_before + original_amount // 2) // original_amount
    return back_after - back_before
