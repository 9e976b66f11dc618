"""Receipt templates: per-POS regular expressions over the decoded lines, loaded from TOML.

A template says how one POS lays out its receipt: which lines must be there for it to apply,
where the receipt number, date and time, total and payments are, where the items start and
end and how an item line reads, and how amounts are written (decimals, thousands separator).
Shipped templates live in `tillstamp/tap/templates/*.toml`; a till can add its own file.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class TemplateError(ValueError):
    """A template that cannot be used (bad TOML, bad pattern, missing field); names the file."""


@dataclass(frozen=True)
class Template:
    """One POS receipt layout; patterns are compiled, amounts in minor units of `decimals`."""

    name: str
    total: re.Pattern[str]
    require: tuple[re.Pattern[str], ...] = ()
    receipt: re.Pattern[str] | None = None
    datetime: re.Pattern[str] | None = None
    payment: re.Pattern[str] | None = None
    items: tuple[re.Pattern[str], ...] = ()
    items_start: tuple[re.Pattern[str], ...] = ()  # lines to pass, in order, before the items
    items_end: re.Pattern[str] | None = None
    skip: tuple[re.Pattern[str], ...] = ()
    ignore: tuple[re.Pattern[str], ...] = ()  # reprint marks: left out of the content digest
    decimals: int = 0
    thousands: str = "."
    decimal_mark: str = ","
    timezone: ZoneInfo | None = None
    description: str = ""
    source: str = ""


_TEMPLATE_KEYS = {"name", "description", "decimals", "thousands", "decimal_mark", "timezone",
                  "require", "ignore"}
_FIELD_KEYS = {"receipt", "datetime", "total", "payment"}
_ITEM_KEYS = {"start", "end", "patterns", "skip"}


def _pattern(src: str, where: str, value: Any) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise TemplateError(f"{src}: {where} must be a non-empty regular expression")
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as e:
        raise TemplateError(f"{src}: {where}: bad regular expression: {e}") from None


def _patterns(src: str, where: str, value: Any) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise TemplateError(f"{src}: {where} must be a list of regular expressions")
    return tuple(_pattern(src, f"{where}[{i}]", v) for i, v in enumerate(value))


def _groups(src: str, where: str, pattern: re.Pattern[str] | None, needed: set[str]) -> None:
    if pattern is not None and not needed <= set(pattern.groupindex):
        missing = ", ".join(sorted(needed - set(pattern.groupindex)))
        raise TemplateError(f"{src}: {where} needs the named group(s) {missing}")


def _unknown(src: str, section: str, table: dict[str, Any], known: set[str]) -> None:
    extra = set(table) - known
    if extra:
        raise TemplateError(f"{src}: [{section}] has unknown key(s) {', '.join(sorted(extra))}")


def parse_template(text: str, source: str = "<template>") -> Template:
    """Build a Template from TOML text; TemplateError says what is wrong and where."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(f"{source}: not valid TOML: {e}") from None
    head, fields, items = raw.get("template"), raw.get("fields"), raw.get("items", {})
    if not isinstance(head, dict) or not isinstance(fields, dict) or not isinstance(items, dict):
        raise TemplateError(f"{source}: needs a [template] and a [fields] table")
    _unknown(source, "template", head, _TEMPLATE_KEYS)
    _unknown(source, "fields", fields, _FIELD_KEYS)
    _unknown(source, "items", items, _ITEM_KEYS)
    name = head.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise TemplateError(f"{source}: [template] name must be 1-64 of letters, digits, . _ -")
    decimals = head.get("decimals", 0)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 4:
        raise TemplateError(f"{source}: [template] decimals must be a whole number 0-4")
    thousands, mark = head.get("thousands", "."), head.get("decimal_mark", ",")
    if not isinstance(thousands, str) or not isinstance(mark, str) or len(mark) != 1 \
            or len(thousands) > 1 or thousands == mark:
        raise TemplateError(f"{source}: thousands and decimal_mark must be different single characters")
    zone = None
    if head.get("timezone"):
        try:
            zone = ZoneInfo(str(head["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise TemplateError(f"{source}: unknown timezone {head['timezone']!r}") from None
    if "total" not in fields:
        raise TemplateError(f"{source}: [fields] total is required")
    t = Template(
        name=name,
        total=_pattern(source, "fields.total", fields["total"]),
        require=_patterns(source, "template.require", head.get("require")),
        receipt=_pattern(source, "fields.receipt", fields["receipt"]) if "receipt" in fields else None,
        datetime=_pattern(source, "fields.datetime", fields["datetime"]) if "datetime" in fields else None,
        payment=_pattern(source, "fields.payment", fields["payment"]) if "payment" in fields else None,
        items=_patterns(source, "items.patterns", items.get("patterns")),
        items_start=_patterns(source, "items.start", items.get("start")),
        items_end=_pattern(source, "items.end", items["end"]) if "end" in items else None,
        skip=_patterns(source, "items.skip", items.get("skip")),
        ignore=_patterns(source, "template.ignore", head.get("ignore")),
        decimals=decimals, thousands=thousands, decimal_mark=mark, timezone=zone,
        description=str(head.get("description", "")), source=source,
    )
    _groups(source, "fields.total", t.total, {"amount"})
    _groups(source, "fields.receipt", t.receipt, {"receipt"})
    _groups(source, "fields.datetime", t.datetime, {"year", "month", "day", "hour", "minute"})
    _groups(source, "fields.payment", t.payment, {"amount"})
    for i, p in enumerate(t.items):
        if not {"amount", "price"} & set(p.groupindex):
            raise TemplateError(f"{source}: items.patterns[{i}] needs a named group amount or price")
    return t


def load_template(path: str | Path) -> Template:
    """Read a template file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"{p}: cannot read: {e}") from None
    return parse_template(text, str(p))


def shipped_templates() -> tuple[Template, ...]:
    """The templates that ship with tillstamp, in name order."""
    folder = resources.files("tillstamp.tap") / "templates"
    found = sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    return tuple(parse_template(f.read_text(encoding="utf-8"), f"templates/{f.name}") for f in found)


def resolve_templates(spec: str | None) -> tuple[Template, ...]:
    """Templates from a name of a shipped one, a file path, or every shipped one (None/"auto")."""
    shipped = shipped_templates()
    if not spec or spec == "auto":
        return shipped
    for t in shipped:
        if t.name == spec:
            return (t,)
    if spec.endswith(".toml") or "/" in spec:
        return (load_template(spec),)
    names = ", ".join(t.name for t in shipped)
    raise TemplateError(f"no template {spec!r}: give a .toml file or one of {names}")
