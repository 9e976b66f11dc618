"""Reading a decoded receipt with a template: number, time, items, total, payments.

`extract(lines, template)` returns a `ParsedReceipt` or raises `NoMatch` (the template does
not apply) — never anything else for any text. `ParsedReceipt.sale_dict()` turns it into the
sale the Service records, reconciling the items with the printed total (tax, service charge
and rounding become one extra line; a total below the items becomes a discount), because
the Service refuses a sale whose lines do not add up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from tillstamp.drivers.escpos_decode import Cut, Document, TextLine, decode
from tillstamp.tap.template import Template, resolve_templates

DEFAULT_ZONE = ZoneInfo("Asia/Jakarta")
_MONTHS = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "mei": 5, "jun": 6, "jul": 7,
           "aug": 8, "agu": 8, "sep": 9, "oct": 10, "okt": 10, "nov": 11, "dec": 12, "des": 12}
MAX_AMOUNT = 10**13  # the Service's own bound: anything above is a misread


class NoMatch(ValueError):
    """The template does not apply to this receipt; the message says which part was missing."""


@dataclass(frozen=True)
class Item:
    """One item line; money in minor units."""

    name: str
    qty: int
    price: int
    amount: int


@dataclass(frozen=True)
class Payment:
    """A payment line (cash, card, QRIS...); money in minor units."""

    method: str
    amount: int


@dataclass(frozen=True)
class ParsedReceipt:
    """What a template read from one printed receipt."""

    template: str
    receipt: str | None
    at: dt.datetime | None
    items: tuple[Item, ...]
    total: int
    payments: tuple[Payment, ...]
    decimals: int
    digest: str  # of the printed text: the key of a receipt without a number

    @property
    def key(self) -> str:
        """The receipt number, or a digest of the printed content when it has none."""
        return self.receipt or f"P-{self.digest[:20].upper()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as `tillstamp tap parse` prints it."""
        return {
            "template": self.template,
            "receipt": self.key,
            "receipt_printed": self.receipt,
            "at": self.at.isoformat() if self.at else None,
            "lines": [{"name": i.name, "qty": i.qty, "price": i.price, "amount": i.amount}
                      for i in self.items],
            "total": self.total,
            "payments": [{"method": p.method, "amount": p.amount} for p in self.payments],
            "decimals": self.decimals,
            "digest": self.digest,
        }

    def sale_dict(self, member: str | None = None) -> dict[str, Any]:
        """The sale for `Service.record_sale` (via `parse_sale`), lines reconciled with the total."""
        lines: list[dict[str, Any]] = []
        discount = 0
        for i in self.items:
            if i.amount < 0:
                discount -= i.amount
            elif i.amount > 0:
                lines.append({"sku": _sku(i.name), "name": i.name[:200], "qty": i.qty, "price": i.price})
        rest = self.total - (sum(ln["qty"] * ln["price"] for ln in lines) - discount)
        if rest > 0:  # tax, service charge, rounding or items the template did not see
            lines.append({"sku": "TAP-OTHER", "name": "Lainnya (pajak, servis, pembulatan)",
                          "qty": 1, "price": rest})
        elif rest < 0:
            discount -= rest
        if not lines:
            lines.append({"sku": "TAP-TOTAL", "name": "Total", "qty": 1, "price": self.total})
            discount = 0
        sale: dict[str, Any] = {"receipt": self.key, "lines": lines, "total": self.total}
        if discount:
            sale["discount"] = discount
        if self.at is not None:
            sale["at"] = self.at.isoformat()
        if member:
            sale["member"] = member
        sale["source"] = "tap"
        return sale


def _sku(name: str) -> str:
    sku = re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-")[:64]
    return sku or "TAP-ITEM"


def parse_amount(text: str, t: Template) -> int:
    """`25.000` or `1,234.50` as an int of minor units with the template's separators."""
    s = re.sub(r"[^\d" + re.escape(t.thousands + t.decimal_mark) + r"()-]", "", text)
    negative = s.startswith("-") or s.endswith("-") or (s.startswith("(") and s.endswith(")"))
    s = s.strip("-()")
    if t.thousands:
        s = s.replace(t.thousands, "")
    whole, _, frac = s.partition(t.decimal_mark)
    if not whole.isdigit() and not (whole == "" and frac.isdigit()):
        raise NoMatch(f"{text.strip()!r} is not an amount")
    if frac and (not frac.isdigit() or len(frac) > t.decimals):
        raise NoMatch(f"{text.strip()!r} has more than {t.decimals} decimals")
    value = int(whole or "0") * 10**t.decimals + int((frac or "0").ljust(t.decimals, "0") or "0")
    if value > MAX_AMOUNT:
        raise NoMatch(f"{text.strip()!r} is too large to be an amount")
    return -value if negative else value


def _first(pattern: re.Pattern[str] | None, lines: Sequence[str]) -> re.Match[str] | None:
    if pattern is None:
        return None
    for text in lines:
        m = pattern.search(text)
        if m:
            return m
    return None


def _datetime(m: re.Match[str], zone: ZoneInfo) -> dt.datetime:
    g = m.groupdict()
    month_text = (g["month"] or "").strip().lower()
    month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text[:3], 0)
    year = int(g["year"])
    year += 2000 if year < 100 else 0
    hour = int(g["hour"])
    ampm = (g.get("ampm") or "").lower()
    if ampm.startswith("p") and hour < 12:
        hour += 12
    elif ampm.startswith("a") and hour == 12:
        hour = 0
    try:
        return dt.datetime(year, month, int(g["day"]), hour, int(g["minute"]),
                           int(g.get("second") or 0), tzinfo=zone)
    except ValueError as e:
        raise NoMatch(f"{m.group(0)!r} is not a date and time: {e}") from None


def _items(lines: Sequence[str], t: Template) -> tuple[Item, ...]:
    start = 0
    for pattern in t.items_start:  # pass these lines in order; the items follow the last one
        found = next((n for n in range(start, len(lines)) if pattern.search(lines[n])), None)
        if found is None:
            return ()
        start = found + 1
    stop = next((n for n in range(start, len(lines)) if t.items_end and t.items_end.search(lines[n])),
                len(lines) if t.items_end is None else start)
    out: list[Item] = []
    pending: str | None = None  # a name on its own line, waiting for its "2 x 12.500" line
    for text in lines[start:stop]:
        if not text.strip() or any(p.search(text) for p in t.skip):
            continue
        m = next((m for p in t.items if (m := p.search(text))), None)
        if m is None:
            pending = text.strip()
            continue
        g = m.groupdict()
        name = (g.get("name") or pending or "").strip()
        pending = None
        if not name:
            continue
        qty = int(g["qty"]) if g.get("qty") and g["qty"].isdigit() and int(g["qty"]) > 0 else 1
        price = parse_amount(g["price"], t) if g.get("price") else None
        amount = parse_amount(g["amount"], t) if g.get("amount") else (price or 0) * qty
        if price is None or price * qty != amount:
            qty, price = (qty, amount // qty) if amount % qty == 0 else (1, amount)
        out.append(Item(name, qty, price, amount))
    return tuple(out)


def digest_lines(lines: Sequence[str], t: Template) -> str:
    """SHA-256 of the printed text, leaving out blank lines and the template's reprint marks."""
    kept = [s.strip() for s in lines if s.strip() and not any(p.search(s) for p in t.ignore)]
    return hashlib.sha256("\n".join(kept).encode("utf-8")).hexdigest()


def extract(lines: Sequence[str], t: Template, zone: ZoneInfo | None = None) -> ParsedReceipt:
    """Read a receipt's lines with template `t`; NoMatch when the template does not apply."""
    lines = [s.rstrip() for s in lines]
    for p in t.require:
        if not any(p.search(s) for s in lines):
            raise NoMatch(f"{t.name}: no line matches {p.pattern!r}")
    total_m = _first(t.total, lines)
    if total_m is None:
        raise NoMatch(f"{t.name}: no total line")
    total = parse_amount(total_m.group("amount"), t)
    if total < 0:
        raise NoMatch(f"{t.name}: negative total (a refund slip)")
    receipt_m = _first(t.receipt, lines)
    receipt = receipt_m.group("receipt").strip()[:64] if receipt_m else None
    when_m = _first(t.datetime, lines)
    at = _datetime(when_m, t.timezone or zone or DEFAULT_ZONE) if when_m else None
    payments = []
    if t.payment is not None:
        for s in lines:
            m = t.payment.search(s)
            if m:
                method = (m.groupdict().get("method") or "payment").strip()
                payments.append(Payment(method, parse_amount(m.group("amount"), t)))
    return ParsedReceipt(t.name, receipt or None, at, _items(lines, t), total, tuple(payments),
                         t.decimals, digest_lines(lines, t))


def extract_any(lines: Sequence[str], templates: Sequence[Template],
                zone: ZoneInfo | None = None) -> ParsedReceipt:
    """The first template (in order) that reads the receipt; NoMatch naming why each failed."""
    reasons = []
    for t in templates:
        try:
            return extract(lines, t, zone)
        except NoMatch as e:
            reasons.append(str(e))
    raise NoMatch("; ".join(reasons) or "no template")


def receipts_in(doc: Document) -> list[list[str]]:
    """The text of each receipt in a document: the lines between cuts (and after the last)."""
    out: list[list[str]] = [[]]
    for block in doc.blocks:
        if isinstance(block, Cut):
            out.append([])
        elif isinstance(block, TextLine):
            out[-1].append(block.text)
    return [lines for lines in out if any(s.strip() for s in lines)]


def parse_job(data: bytes, template: str | None) -> ParsedReceipt:
    """The first receipt in a job that a template reads; NoMatch if none does."""
    templates = resolve_templates(template)
    reasons = []
    for lines in receipts_in(decode(data)) or [[]]:
        try:
            return extract_any(lines, templates)
        except NoMatch as e:
            reasons.append(str(e))
    raise NoMatch("; ".join(dict.fromkeys(reasons)))
