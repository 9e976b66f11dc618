"""The event rules both ends hold, so that nothing a till commits is refused by head office.

The till checks every event against these rules as it appends it (and its inputs — POS API,
CLI, print tap — refuse earlier, with a reason in the cashier's terms); head office checks
every pushed event against the same rules at ingest. An event that still breaks them at head
office (a till running older code, a ledger edited by hand) is quarantined there on its own,
and the rest of the batch is taken: see docs/SYNC.md, "Events head office refuses".

Bounds (documented in docs/SYNC.md):

| what | bound |
|---|---|
| any text field (ids, receipt, SKU, names, category...) | no control characters (C0, DEL, C1), no lone surrogates |
| event id, terminal, store, member | 1-64 characters (member 0-64) |
| kind | a known kind; ref at most 200 characters |
| receipt, SKU, category | 1-64 characters; a line name at most 200 |
| lines per sale | 1-500 |
| quantity per line | 1-100,000 |
| unit price, total, discount | 0-10^13 minor units |
| stamps of one event | within +-1,000,000 |
| stamps one sale earns (at the till's input) | at most 100,000 |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from . import events as ev

MAX_ID = 64
MAX_KIND = 40
MAX_REF = 200
MAX_RECEIPT = 64
MAX_SKU = 64
MAX_CATEGORY = 64
MAX_LINE_NAME = 200
MAX_LINES = 500
MAX_QTY = 100_000
MAX_AMOUNT = 10**13  # ten trillion rupiah: anything above is a typo or an attack
MAX_EVENT_STAMPS = 1_000_000
MAX_SALE_STAMPS = 100_000

# C0 controls, DEL, C1 controls, and UTF-16 surrogates (which cannot be stored as UTF-8).
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class RuleError(ValueError):
    """An event or an input field that breaks the shared rules; the message names the field."""


def text_problem(value: object, max_len: int, min_len: int = 0) -> str | None:
    """Why `value` is not an acceptable text field, or None."""
    if type(value) is not str:
        return "expected a text"
    if not min_len <= len(value) <= max_len:
        return f"expected {min_len}-{max_len} characters" if min_len else f"at most {max_len} characters"
    m = _BAD.search(value)
    if m is not None:
        return f"control character U+{ord(m.group()):04X} is not allowed"
    return None


def check_text(where: str, value: object, max_len: int, min_len: int = 0) -> None:
    """Raise RuleError naming `where` when `value` is not an acceptable text field."""
    problem = text_problem(value, max_len, min_len)
    if problem is not None:
        raise RuleError(f"{where}: {problem}")


def is_clean(text: str) -> bool:
    """True when a text holds no control character and no lone surrogate."""
    return _BAD.search(text) is None


def _is_int(v: object) -> bool:
    return type(v) is int


def head_problem(eid: object, terminal: object, store: object, kind: object, member: object, ref: object,
                 stamps: object) -> str | None:
    """Why an event's head fields break the rules, or None."""
    if (type(eid) is str and 0 < len(eid) <= MAX_ID and type(terminal) is str and 0 < len(terminal) <= MAX_ID
            and type(store) is str and 0 < len(store) <= MAX_ID and type(kind) is str and kind in ev.KINDS
            and (member is None or type(member) is str and len(member) <= MAX_ID)
            and (ref is None or type(ref) is str and len(ref) <= MAX_REF)
            and type(stamps) is int and -MAX_EVENT_STAMPS <= stamps <= MAX_EVENT_STAMPS
            and _BAD.search(f"{eid}{terminal}{store}{member or ''}{ref or ''}") is None):
        # The usual head in one expression (every event a till appends or HQ ingests); anything
        # else takes the field-by-field path below, which names the problem.
        return None
    for name, value, lo, hi, nullable in (("id", eid, 1, MAX_ID, False), ("terminal", terminal, 1, MAX_ID, False),
                                          ("store", store, 1, MAX_ID, False), ("kind", kind, 1, MAX_KIND, False),
                                          ("member", member, 0, MAX_ID, True), ("ref", ref, 0, MAX_REF, True)):
        if value is None and nullable:
            continue
        problem = text_problem(value, hi, lo)
        if problem is not None:
            return f"{name}: {problem}"
    if kind not in ev.KINDS:
        return f"kind: unknown kind {kind!r}"
    if not _is_int(stamps) or not -MAX_EVENT_STAMPS <= stamps <= MAX_EVENT_STAMPS:  # type: ignore[operator]
        return f"stamps: must be an integer within +-{MAX_EVENT_STAMPS:,}"
    return None


def _amount_problem(where: str, v: object) -> str | None:
    if not _is_int(v) or not 0 <= v <= MAX_AMOUNT:  # type: ignore[operator]
        return f"{where}: expected a whole number 0-{MAX_AMOUNT} (minor units)"
    return None


def body_problem(kind: str, body: Mapping[str, Any]) -> str | None:
    """Why an event's body breaks the rules, or None (the fields a sale's body carries are bounded)."""
    if kind != ev.SALE:
        return None
    if "receipt" in body:
        problem = text_problem(body["receipt"], MAX_RECEIPT, 1)
        if problem is not None:
            return f"body.receipt: {problem}"
    for key in ("total", "discount"):
        if key in body and (problem := _amount_problem(f"body.{key}", body[key])) is not None:
            return problem
    lines = body.get("lines")
    if lines is None:
        return None
    if type(lines) is not list or len(lines) > MAX_LINES:
        return f"body.lines: expected a list of at most {MAX_LINES} lines"
    for i, ln in enumerate(lines):
        problem = line_problem(ln)
        if problem is not None:
            return f"body.lines[{i}].{problem}"
    return None


def line_problem(ln: object) -> str | None:
    """Why a sale line (as stored in a sale's body) breaks the rules, or None."""
    if type(ln) is dict:
        # The usual line in one expression (HQ checks every line of every sale it ingests);
        # anything else takes the field-by-field path below, which names the problem.
        sku, name, cat, qty, price = ln.get("sku"), ln.get("name", ""), ln.get("category"), ln.get("qty"), \
            ln.get("price", 0)
        if (type(sku) is str and 0 < len(sku) <= MAX_SKU and type(name) is str and len(name) <= MAX_LINE_NAME
                and (cat is None or type(cat) is str and len(cat) <= MAX_CATEGORY)
                and (qty is None or type(qty) is int and 1 <= qty <= MAX_QTY)
                and type(price) is int and 0 <= price <= MAX_AMOUNT
                and _BAD.search(f"{sku}{name}{cat or ''}") is None):
            return None
    return line_fields_problem(ln)


def line_fields_problem(ln: object) -> str | None:
    """`line_problem` field by field: the reference for its one-expression fast path."""
    if not isinstance(ln, Mapping):
        return "expected an object"
    for key, hi, lo in (("sku", MAX_SKU, 1), ("name", MAX_LINE_NAME, 0), ("category", MAX_CATEGORY, 0)):
        if key in ln and not (key == "category" and ln[key] is None):
            problem = text_problem(ln[key], hi, lo)
            if problem is not None:
                return f"{key}: {problem}"
    qty = ln.get("qty")
    if qty is not None and (not _is_int(qty) or not 1 <= qty <= MAX_QTY):
        return f"qty: expected a whole number 1-{MAX_QTY:,}"
    if "price" in ln:
        return _amount_problem("price", ln["price"])
    return None


def event_problem(eid: object, terminal: object, store: object, kind: object, member: object, ref: object,
                  stamps: object, body: Mapping[str, Any]) -> str | None:
    """Why an event breaks the rules (head, then body), or None: the one check both ends apply."""
    problem = head_problem(eid, terminal, store, kind, member, ref, stamps)
    if problem is None and isinstance(kind, str):
        problem = body_problem(kind, body)
    return problem
