"""Sales as the domain sees them: typed, validated, amounts in minor units."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from . import rules
from .rules import MAX_AMOUNT, MAX_LINES, MAX_QTY


class SaleError(ValueError):
    """A sale that cannot be recorded; the message says which field and why."""


@dataclass(frozen=True)
class SaleLine:
    """One line of a sale: `price` is the unit price in the currency's minor unit."""

    sku: str
    name: str
    qty: int
    price: int
    category: str | None = None
    paid_with_stamps: bool = False

    @property
    def amount(self) -> int:
        """What the line costs: quantity times unit price."""
        return self.qty * self.price

    def to_dict(self) -> dict[str, Any]:
        """The line as JSON-ready data."""
        d: dict[str, Any] = {"sku": self.sku, "name": self.name, "qty": self.qty, "price": self.price}
        if self.category is not None:
            d["category"] = self.category
        if self.paid_with_stamps:
            d["paid_with_stamps"] = True
        return d


@dataclass(frozen=True)
class Sale:
    """A sale as the POS reports it; `member` is whatever identifies the customer, if any."""

    receipt: str
    at: dt.datetime
    lines: tuple[SaleLine, ...]
    total: int
    member: str | None = None
    discount: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    at_given: bool = field(default=True, compare=False)  # False: `at` is the till's clock at input

    def to_dict(self, lines: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The sale as JSON-ready data (without the member reference); `lines` when made already."""
        d: dict[str, Any] = {
            "receipt": self.receipt,
            "at": self.at.isoformat(),
            "lines": [ln.to_dict() for ln in self.lines] if lines is None else lines,
            "total": self.total,
        }
        if self.discount:
            d["discount"] = self.discount
        return d


# A sale may be dated a little ahead of the till's clock (a POS clock a few minutes fast);
# beyond this it is refused: a future date would count towards missions and tiers early.
FUTURE_TOLERANCE = dt.timedelta(minutes=10)
KEYS = frozenset({"receipt", "at", "lines", "total", "member", "discount", "source"})
LINE_KEYS = frozenset({"sku", "name", "qty", "price", "category", "paid_with_stamps"})

def _text(where: str, value: Any, max_len: int, min_len: int = 0) -> None:
    problem = rules.text_problem(value, max_len, min_len)
    if problem is not None:
        raise SaleError(f"{where}: {problem}")


def _unknown(where: str, data: dict[str, Any], known: frozenset[str]) -> None:
    # A misspelt key ("memebr") must not silently drop what it meant to say.
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise SaleError(f"{where}unknown field {unknown[0][:40]!r} (known: {', '.join(sorted(known))})")


def parse_sale(data: Any, *, now: dt.datetime) -> Sale:
    """Validate a sale from JSON-like data; raise SaleError naming the first problem."""
    if not isinstance(data, dict):
        raise SaleError("sale: expected a JSON object")
    if not data.keys() <= KEYS:
        _unknown("", data, KEYS)
    receipt = data.get("receipt")
    if not isinstance(receipt, str) or not receipt.strip() or len(receipt) > rules.MAX_RECEIPT:
        raise SaleError("receipt: expected a non-empty text of at most 64 characters")
    _text("receipt", receipt, rules.MAX_RECEIPT, 1)
    at = _parse_at(data.get("at"), now)
    if at - now > FUTURE_TOLERANCE:
        raise SaleError(f"at: {at.isoformat()} is in the future (the till's clock says {now.isoformat()})")
    raw_lines = data.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise SaleError("lines: expected a non-empty list")
    if len(raw_lines) > MAX_LINES:
        raise SaleError(f"lines: at most {MAX_LINES} lines per sale")
    lines = tuple(_parse_line(i, ln) for i, ln in enumerate(raw_lines))
    discount = data.get("discount", 0)
    if not _is_int(discount) or discount < 0:
        raise SaleError("discount: expected a whole number >= 0 (minor units)")
    total = data.get("total")
    if not _is_int(total) or total < 0:
        raise SaleError("total: expected a whole number >= 0 (minor units)")
    expected = sum(ln.amount for ln in lines) - discount
    if expected < 0 or expected > MAX_AMOUNT:
        raise SaleError("discount: larger than the lines")
    if total != expected:
        raise SaleError(f"total: {total} does not match the lines ({expected})")
    member = data.get("member")
    if member is not None and (not isinstance(member, str) or not member.strip()):
        raise SaleError("member: expected a QR payload, phone number or member id")
    if member is not None:
        _text("member", member, 1024, 1)
    source = data.get("source")
    if source is not None:
        _text("source", source, 32)
    return Sale(
        receipt=receipt.strip(),
        at=at,
        lines=lines,
        total=total,
        member=member.strip() if member else None,
        discount=discount,
        extra={"source": source} if source is not None else {},
        at_given=data.get("at") is not None,
    )


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_at(val: Any, now: dt.datetime) -> dt.datetime:
    if val is None:
        return now
    if not isinstance(val, str):
        raise SaleError("at: expected an ISO 8601 time with a UTC offset")
    try:
        at = dt.datetime.fromisoformat(val)
    except ValueError:
        raise SaleError(f"at: {val!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise SaleError(f"at: {val!r} has no UTC offset (write e.g. 2026-11-23T09:15:00+07:00)")
    return at


def _parse_line(i: int, ln: Any) -> SaleLine:
    if type(ln) is dict and ln.keys() <= LINE_KEYS:
        # The usual line in one expression: the same checks as below, which name the problem.
        sku, name, qty = ln.get("sku"), ln.get("name", ln.get("sku")), ln.get("qty", 1)
        price, category, paid = ln.get("price"), ln.get("category"), ln.get("paid_with_stamps", False)
        if (type(sku) is str and 0 < len(sku) <= rules.MAX_SKU and sku.strip()
                and type(name) is str and len(name) <= rules.MAX_LINE_NAME
                and (category is None or type(category) is str and len(category) <= rules.MAX_CATEGORY)
                and type(qty) is int and 0 < qty <= MAX_QTY and type(price) is int and 0 <= price <= MAX_AMOUNT
                and type(paid) is bool and rules.is_clean(f"{sku}{name}{category or ''}")):
            return SaleLine(sku=sku.strip(), name=name, qty=qty, price=price, category=category, paid_with_stamps=paid)
    return _parse_line_fields(i, ln)


def _parse_line_fields(i: int, ln: Any) -> SaleLine:
    """`_parse_line` field by field: the reference for its one-expression fast path."""
    where = f"lines[{i}]"
    if not isinstance(ln, dict):
        raise SaleError(f"{where}: expected an object")
    _unknown(f"{where}: ", ln, LINE_KEYS)
    sku = ln.get("sku")
    if not isinstance(sku, str) or not sku.strip() or len(sku) > rules.MAX_SKU:
        raise SaleError(f"{where}.sku: expected a non-empty text")
    _text(f"{where}.sku", sku, rules.MAX_SKU, 1)
    name = ln.get("name", sku)
    if not isinstance(name, str) or len(name) > rules.MAX_LINE_NAME:
        raise SaleError(f"{where}.name: expected a text")
    _text(f"{where}.name", name, rules.MAX_LINE_NAME)
    qty = ln.get("qty", 1)
    if not _is_int(qty) or qty <= 0 or qty > MAX_QTY:
        raise SaleError(f"{where}.qty: expected a whole number 1-{MAX_QTY:,}, got {qty!r}")
    price = ln.get("price")
    if not _is_int(price) or price < 0 or price > MAX_AMOUNT:
        raise SaleError(f"{where}.price: expected a whole number >= 0 (minor units), got {price!r}")
    category = ln.get("category")
    if category is not None:
        _text(f"{where}.category", category, rules.MAX_CATEGORY)
    paid = ln.get("paid_with_stamps", False)
    if not isinstance(paid, bool):
        raise SaleError(f"{where}.paid_with_stamps: expected true or false")
    return SaleLine(sku=sku.strip(), name=name, qty=qty, price=price, category=category, paid_with_stamps=paid)
