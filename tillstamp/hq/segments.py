"""Segments: named definitions of members, as data (TOML or JSON), parsed into a small typed tree.

Pure: no SQL here. `parse_segment` validates a definition and names the path of a wrong key
(`all[1].visits.min: expected a whole number`); `evaluate` is the reference evaluator the
tests hold the SQL compiler (`hq/segment_sql.py`) to. The meaning of every leaf, the RFM cells
and the as-of rule are in docs/HQ.md ("Segments").
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from ..loyalty.events import CHANNELS
from .predicted import CHURN_RISKS

EPOCH = dt.date(1970, 1, 1)
MAX_DAYS = 3660  # ten years: a window longer than that is a typo, not a question
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
META_KEYS = ("name", "description")


class SegmentError(ValueError):
    """A segment definition that is not valid; the message names the offending key's path."""


# -- the tree ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Inclusive bounds on a whole number; None is open."""

    min: int | None = None
    max: int | None = None

    def holds(self, value: int) -> bool:
        """True when `value` lies within the bounds."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class All:
    """Every condition holds (an empty list: everyone)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one condition holds (an empty list: no one)."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The condition does not hold."""

    item: Node


@dataclass(frozen=True)
class LastVisitDays:
    """Calendar days from the last sale's local date to the as-of date."""

    days: Range


@dataclass(frozen=True)
class Visits:
    """Distinct sales in the window (`within_days` None: all time before as-of)."""

    count: Range
    within_days: int | None


@dataclass(frozen=True)
class Spend:
    """Sum of line amounts (minor units, net of refunds) in the window."""

    amount: Range
    within_days: int | None


@dataclass(frozen=True)
class Bought:
    """At least `min_times` sales with a line of this SKU (or category) in the window."""

    sku: str | None
    category: str | None
    min_times: int
    within_days: int | None


@dataclass(frozen=True)
class InStore:
    """Enrolled at one of these stores, or bought there before as-of."""

    stores: tuple[str, ...]


@dataclass(frozen=True)
class TierIn:
    """Current tier is one of these."""

    tiers: tuple[str, ...]


@dataclass(frozen=True)
class BalanceIn:
    """Current stamp balance within bounds."""

    stamps: Range


@dataclass(frozen=True)
class HasBadge:
    """Holds this badge."""

    badge: str


@dataclass(frozen=True)
class Consented:
    """Has consented to this channel."""

    channel: str


@dataclass(frozen=True)
class BirthdayWithin:
    """Birthday (store calendar) falls on one of the `days` days starting at the as-of date."""

    days: int


@dataclass(frozen=True)
class BirthdayThisMonth:
    """Birthday falls in the as-of date's month."""


@dataclass(frozen=True)
class EnrolledWithin:
    """Enrolled on one of the `days` days before the as-of date."""

    days: int


@dataclass(frozen=True)
class StampsExpiring:
    """Holds stamps that expire within `days` days from as-of (program expiry)."""

    days: int


@dataclass(frozen=True)
class ToFullCard:
    """Stamps still missing to fill the current card (1..card size)."""

    missing: Range


@dataclass(frozen=True)
class Rfm:
    """In one of these RFM cells (see RFM_CELLS)."""

    cells: tuple[str, ...]


@dataclass(frozen=True)
class Share:
    """Inclusive bounds on a probability (0..1); None is open."""

    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        """True when `value` lies within the bounds."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


# Predicted leaves read the newest complete prediction run (`hq predict`); a member the run did
# not score (no sale before its as-of) matches none of them.


@dataclass(frozen=True)
class VisitChance:
    """Predicted probability of a visit in the next 14 days, within bounds."""

    share: Share


@dataclass(frozen=True)
class ValueTop:
    """Among the top `percent` % of the run's members by predicted 12-month value (ties kept)."""

    percent: int


@dataclass(frozen=True)
class ReorderDue:
    """A predicted reorder (any category) due by as-of + `days`; overdue ones included."""

    days: int


@dataclass(frozen=True)
class ChurnRiskIn:
    """In one of these churn-risk bands (hq/churn.py)."""

    bands: tuple[str, ...]


Leaf = (LastVisitDays | Visits | Spend | Bought | InStore | TierIn | BalanceIn | HasBadge | Consented
        | BirthdayWithin | BirthdayThisMonth | EnrolledWithin | StampsExpiring | ToFullCard | Rfm
        | VisitChance | ValueTop | ReorderDue | ChurnRiskIn)
Node = All | AnyOf | Not | Leaf


@dataclass(frozen=True)
class Segment:
    """A parsed definition, with its name and description when it has them."""

    root: Node
    definition: dict[str, Any]
    name: str | None = None
    description: str = ""


# -- RFM ---------------------------------------------------------------------------------

# R from days since the last visit, F from visits in the 365 days before as-of. A score is the
# first bucket the value fits: recency <= 14 days scores 5, <= 30 4, <= 60 3, <= 120 2, else 1.
RECENCY_BUCKETS = ((5, 0, 14), (4, 15, 30), (3, 31, 60), (2, 61, 120), (1, 121, None))
FREQUENCY_BUCKETS = ((5, 10, None), (4, 6, 9), (3, 3, 5), (2, 2, 2), (1, 0, 1))
FREQUENCY_DAYS = 365

# Each (R, F) pair lies in exactly one cell.
RFM_CELLS: dict[str, tuple[tuple[int, int], ...]] = {
    "champions": ((5, 4), (5, 5)),
    "loyal": ((4, 4), (4, 5), (3, 4), (3, 5)),
    "potential_loyalist": ((5, 2), (5, 3), (4, 2), (4, 3)),
    "new": ((5, 1),),
    "promising": ((4, 1),),
    "need_attention": ((3, 3),),
    "about_to_sleep": ((3, 1), (3, 2)),
    "at_risk": ((2, 3), (2, 4), (2, 5), (1, 3), (1, 4)),
    "cant_lose": ((1, 5),),
    "hibernating": ((2, 1), (2, 2)),
    "lost": ((1, 1), (1, 2)),
}


def _score(value: int, buckets: Sequence[tuple[int, int, int | None]]) -> int:
    for score, lo, hi in buckets:
        if value >= lo and (hi is None or value <= hi):
            return score
    raise AssertionError(value)  # the buckets cover every value >= 0


def rfm_cell(recency_days: int, visits_365: int) -> str:
    """The RFM cell of a member with a visit `recency_days` before as-of."""
    pair = (_score(recency_days, RECENCY_BUCKETS), _score(visits_365, FREQUENCY_BUCKETS))
    return next(name for name, pairs in RFM_CELLS.items() if pair in pairs)


# -- parsing -----------------------------------------------------------------------------


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _int(v: Any, path: str, minimum: int = 0, maximum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SegmentError(f"{path}: expected a whole number, got {v!r}")
    if v < minimum:
        raise SegmentError(f"{path}: must be at least {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise SegmentError(f"{path}: must be at most {maximum}, got {v}")
    return v


def _text(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise SegmentError(f"{path}: expected non-empty text, got {v!r}")
    return v


def _table(v: Any, path: str, allowed: Iterable[str]) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise SegmentError(f"{path}: expected a table, got {v!r}")
    allowed = tuple(allowed)
    for k in v:
        if k not in allowed:
            raise SegmentError(f"{_at(path, k)}: unknown key (expected {', '.join(allowed)})")
    return v


def _range(v: Any, path: str, extra: Iterable[str] = (), maximum: int | None = None) -> tuple[Range, dict[str, Any]]:
    t = _table(v, path, ("min", "max", *extra))
    lo = _int(t["min"], _at(path, "min"), maximum=maximum) if "min" in t else None
    hi = _int(t["max"], _at(path, "max"), maximum=maximum) if "max" in t else None
    if lo is None and hi is None:
        raise SegmentError(f"{path}: give min, max or both")
    if lo is not None and hi is not None and lo > hi:
        raise SegmentError(f"{path}: min {lo} is above max {hi}")
    return Range(lo, hi), t


def _within(t: Mapping[str, Any], path: str) -> int | None:
    return _int(t["within_days"], _at(path, "within_days"), 1, MAX_DAYS) if "within_days" in t else None


def _names(v: Any, path: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v:
        raise SegmentError(f"{path}: expected a non-empty list of text, got {v!r}")
    return tuple(_text(x, _at(path, i)) for i, x in enumerate(v))


def _parse_node(v: Any, path: str) -> Node:
    if not isinstance(v, dict):
        raise SegmentError(f"{path or 'segment'}: expected a table with one condition, got {v!r}")
    if len(v) != 1:
        keys = ", ".join(sorted(map(str, v))) or "none"
        raise SegmentError(f"{path or 'segment'}: expected exactly one condition, got {keys}")
    key, arg = next(iter(v.items()))
    here = _at(path, key)
    if key in ("all", "any"):
        if not isinstance(arg, list):
            raise SegmentError(f"{here}: expected a list of conditions, got {arg!r}")
        items = tuple(_parse_node(x, _at(here, i)) for i, x in enumerate(arg))
        return All(items) if key == "all" else AnyOf(items)
    if key == "not":
        return Not(_parse_node(arg, here))
    parser = _LEAVES.get(key)
    if parser is None:
        raise SegmentError(f"{here}: unknown condition (expected all, any, not, {', '.join(_LEAVES)})")
    return parser(arg, here)


def _last_visit(a: Any, p: str) -> Node:
    return LastVisitDays(_range(a, p, maximum=MAX_DAYS * 10)[0])


def _visits(a: Any, p: str) -> Node:
    r, t = _range(a, p, ("within_days",))
    return Visits(r, _within(t, p))


def _spend(a: Any, p: str) -> Node:
    r, t = _range(a, p, ("within_days",))
    return Spend(r, _within(t, p))


def _bought(a: Any, p: str) -> Node:
    t = _table(a, p, ("sku", "category", "min_times", "within_days"))
    if ("sku" in t) == ("category" in t):
        raise SegmentError(f"{p}: give exactly one of sku or category")
    sku = _text(t["sku"], _at(p, "sku")) if "sku" in t else None
    cat = _text(t["category"], _at(p, "category")) if "category" in t else None
    times = _int(t.get("min_times", 1), _at(p, "min_times"), 1)
    return Bought(sku, cat, times, _within(t, p))


def _consent(a: Any, p: str) -> Node:
    if a not in CHANNELS:
        raise SegmentError(f"{p}: expected one of {', '.join(CHANNELS)}, got {a!r}")
    return Consented(str(a))


def _birthday_month(a: Any, p: str) -> Node:
    if a is not True:
        raise SegmentError(f"{p}: expected true, got {a!r}")
    return BirthdayThisMonth()


def _rfm(a: Any, p: str) -> Node:
    cells = _names(a, p)
    for i, c in enumerate(cells):
        if c not in RFM_CELLS:
            raise SegmentError(f"{_at(p, i)}: unknown RFM cell {c!r} (expected {', '.join(RFM_CELLS)})")
    return Rfm(cells)


def _share(a: Any, p: str) -> Node:
    t = _table(a, p, ("min", "max"))
    if not t:
        raise SegmentError(f"{p}: give min, max or both")
    out: dict[str, float] = {}
    for k, v in t.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
            raise SegmentError(f"{_at(p, k)}: expected a probability from 0 to 1, got {v!r}")
        out[k] = float(v)
    if "min" in out and "max" in out and out["min"] > out["max"]:
        raise SegmentError(f"{p}: min is above max")
    return VisitChance(Share(out.get("min"), out.get("max")))


def _value_top(a: Any, p: str) -> Node:
    t = _table(a, p, ("top_percent",))
    if "top_percent" not in t:
        raise SegmentError(f"{p}: give top_percent")
    return ValueTop(_int(t["top_percent"], _at(p, "top_percent"), 1, 100))


def _churn(a: Any, p: str) -> Node:
    bands = _names(a, p)
    for i, b in enumerate(bands):
        if b not in CHURN_RISKS:
            raise SegmentError(f"{_at(p, i)}: unknown churn risk {b!r} (expected {', '.join(CHURN_RISKS)})")
    return ChurnRiskIn(bands)


_LEAVES: dict[str, Any] = {
    "last_visit_days": _last_visit,
    "visits": _visits,
    "spend": _spend,
    "bought": _bought,
    "store": lambda a, p: InStore(_names(a, p)),
    "tier": lambda a, p: TierIn(_names(a, p)),
    "balance": lambda a, p: BalanceIn(_range(a, p)[0]),
    "badge": lambda a, p: HasBadge(_text(a, p)),
    "consent": _consent,
    "birthday_within_days": lambda a, p: BirthdayWithin(_int(a, p, 1, 366)),
    "birthday_this_month": _birthday_month,
    "enrolled_within_days": lambda a, p: EnrolledWithin(_int(a, p, 1, MAX_DAYS)),
    "stamps_expiring_within_days": lambda a, p: StampsExpiring(_int(a, p, 1, MAX_DAYS)),
    "stamps_to_full_card": lambda a, p: ToFullCard(_range(a, p)[0]),
    "rfm": _rfm,
    "p_visit_14d": _share,
    "value_12m": _value_top,
    "reorder_due_within_days": lambda a, p: ReorderDue(_int(a, p, 0, MAX_DAYS)),
    "churn_risk": _churn,
}
LEAVES = tuple(_LEAVES)


def parse_segment(data: Any) -> Segment:
    """Validate a definition: one condition at the top, beside optional `name` and `description`."""
    if not isinstance(data, dict):
        raise SegmentError(f"segment: expected a table, got {type(data).__name__}")
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
        raise SegmentError(f"name: use 1-64 lowercase letters, digits, '-' or '_', got {name!r}")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise SegmentError(f"description: expected text, got {desc!r}")
    body = {k: v for k, v in data.items() if k not in META_KEYS}
    root = _parse_node(body, "")
    return Segment(root, body, name, desc)


def load_segment_text(text: str, source: str = "segment") -> dict[str, Any]:
    """A definition's data from TOML or JSON text (JSON when it starts with `{`)."""
    try:
        if text.lstrip().startswith("{"):
            data = json.loads(text)
            if not isinstance(data, dict):
                raise SegmentError(f"{source}: expected a JSON object")
            return data
        return tomllib.loads(text)
    except json.JSONDecodeError as e:
        raise SegmentError(f"{source}: not valid JSON: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SegmentError(f"{source}: not valid TOML: {e}") from None


# -- predefined --------------------------------------------------------------------------

PREDEFINED: dict[str, dict[str, Any]] = {
    **{f"rfm-{cell.replace('_', '-')}": {"rfm": [cell]} for cell in RFM_CELLS},
    "new": {"enrolled_within_days": 30},
    "lapsed-14": {"last_visit_days": {"min": 14}},
    "lapsed-30": {"last_visit_days": {"min": 30}},
    "lapsed-60": {"last_visit_days": {"min": 60}},
    "birthday-this-month": {"birthday_this_month": True},
    "card-almost-full": {"stamps_to_full_card": {"max": 2}},
}


# -- evaluation context ------------------------------------------------------------------


def epoch_day(d: dt.date) -> int:
    """Days since 1970-01-01 (the read model's `day` columns)."""
    return (d - EPOCH).days


def months_before(t: dt.datetime, months: int) -> dt.datetime:
    """The earliest moment `s` with `add_months(s, months) >= t` (the inverse of the clamped add)."""
    y, m = divmod(t.month - 1 - months, 12)
    year, month = t.year + y, m + 1
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = (nxt - dt.timedelta(days=1)).day
    if t.day <= last:
        return t.replace(year=year, month=month)
    # No day of that shorter month maps this late: the first moment of the next month does.
    return dt.datetime(nxt.year, nxt.month, 1, tzinfo=t.tzinfo)


@dataclass(frozen=True)
class AsOf:
    """When and where a segment is evaluated: the store-local date D (D 00:00 store time; nothing
    on or after it counts), the store's zone, and the program figures some leaves need."""

    date: dt.date
    zone: str = "Asia/Jakarta"
    card_size: int = 10
    expiry_months: int = 0

    @property
    def day(self) -> int:
        """D as an epoch day."""
        return epoch_day(self.date)

    def start_utc(self, days: int = 0) -> dt.datetime:
        """00:00 store time on D + `days`, in UTC."""
        local = dt.datetime.combine(self.date + dt.timedelta(days=days), dt.time(), ZoneInfo(self.zone))
        return local.astimezone(dt.UTC)

    def expiry_window(self, days: int) -> tuple[str, str] | None:
        """ISO UTC bounds [lo, hi) on a lot's earning time for it to expire within `days` of D."""
        if not self.expiry_months:
            return None
        lo = months_before(self.start_utc(), self.expiry_months)
        hi = months_before(self.start_utc(days), self.expiry_months)
        return lo.isoformat(), hi.isoformat()

    def birthdays(self, days: int) -> list[str]:
        """'MM-DD' of every birthday celebrated on D .. D+days-1. Feb 29 birthdays are kept on
        Feb 28 in other years (they stay in February)."""
        out: list[str] = []
        for i in range(days):
            d = self.date + dt.timedelta(days=i)
            out.append(d.strftime("%m-%d"))
            if d.month == 2 and d.day == 28 and not _leap(d.year):
                out.append("02-29")
        return sorted(set(out))


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def today_in(zone: str, now: dt.datetime | None = None) -> dt.date:
    """Today's date in the store's zone (the default as-of)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(zone)).date()


# -- the reference evaluator -------------------------------------------------------------


@dataclass(frozen=True)
class MemberFacts:
    """What the reference evaluator reads of one `crm_members` row."""

    member: str
    store: str | None = None
    enrolled_day: int | None = None
    birthday: str | None = None
    consent: frozenset[str] = frozenset()
    balance: int = 0
    tier: str | None = None
    badges: tuple[str, ...] = ()
    merged_into: str | None = None
    erased: bool = False


@dataclass(frozen=True)
class LineFacts:
    """What the reference evaluator reads of one `sale_lines` row."""

    sale: str
    member: str | None
    store: str
    day: int
    sku: str
    category: str | None
    qty: int
    amount: int
    voided: bool = False


@dataclass(frozen=True)
class StampFacts:
    """A member's event as far as stamps go: merge order, UTC time (ISO), signed stamps."""

    member: str
    gseq: int
    at: str
    stamps: int


@dataclass(frozen=True)
class PredictionFacts:
    """What the reference evaluator reads of one member's row in the newest prediction run."""

    member: str
    p_visit_14d: float
    value_12m: int
    reorder_day: int | None
    churn_risk: str


@dataclass
class Facts:
    """Everything the reference evaluator needs, read whole."""

    members: list[MemberFacts]
    lines: list[LineFacts]
    stamps: list[StampFacts] = field(default_factory=list)
    predictions: list[PredictionFacts] = field(default_factory=list)


def population(facts: Facts, asof: AsOf) -> list[MemberFacts]:
    """Members a segment can hold: not merged away, not erased, enrolled before D (or unknown)."""
    return [m for m in facts.members if m.merged_into is None and not m.erased
            and (m.enrolled_day is None or m.enrolled_day < asof.day)]


def evaluate(root: Node, facts: Facts, asof: AsOf) -> set[str]:
    """The members the definition selects, computed in plain Python (the tests' reference)."""
    d = asof.day
    by_member: dict[str, list[LineFacts]] = {}
    for ln in facts.lines:
        if ln.member is not None and not ln.voided and ln.day < d:
            by_member.setdefault(ln.member, []).append(ln)
    stamps: dict[str, list[StampFacts]] = {}
    cutoff = asof.start_utc().isoformat()
    for s in sorted(facts.stamps, key=lambda s: s.gseq):
        if s.at < cutoff:
            stamps.setdefault(s.member, []).append(s)

    def window(lines: list[LineFacts], within: int | None) -> list[LineFacts]:
        return lines if within is None else [ln for ln in lines if ln.day >= d - within]

    predicted = {p.member: p for p in facts.predictions}
    values = sorted((p.value_12m for p in facts.predictions), reverse=True)

    def value_rank(v: int) -> float:
        # cume_dist() over value descending: the share of the run's members worth at least v
        return bisect.bisect_right([-x for x in values], -v) / len(values)

    def holds(node: Node, m: MemberFacts) -> bool:
        lines = by_member.get(m.member, [])
        match node:
            case All(items):
                return all(holds(i, m) for i in items)
            case AnyOf(items):
                return any(holds(i, m) for i in items)
            case Not(item):
                return not holds(item, m)
            case LastVisitDays(r):
                return bool(lines) and r.holds(d - max(ln.day for ln in lines))
            case Visits(r, within):
                return r.holds(len({ln.sale for ln in window(lines, within)}))
            case Spend(r, within):
                return r.holds(sum(ln.amount for ln in window(lines, within)))
            case Bought(sku, cat, times, within):
                hit = {ln.sale for ln in window(lines, within) if ln.qty > 0
                       and (ln.sku == sku if sku is not None else ln.category == cat)}
                return len(hit) >= times
            case InStore(stores):
                return m.store in stores or any(ln.store in stores for ln in lines)
            case TierIn(tiers):
                return m.tier in tiers
            case BalanceIn(r):
                return r.holds(m.balance)
            case HasBadge(badge):
                return badge in m.badges
            case Consented(channel):
                return channel in m.consent
            case BirthdayWithin(days):
                return m.birthday is not None and m.birthday[5:10] in asof.birthdays(days)
            case BirthdayThisMonth():
                return m.birthday is not None and m.birthday[5:7] == f"{asof.date.month:02d}"
            case EnrolledWithin(days):
                return m.enrolled_day is not None and d - days <= m.enrolled_day < d
            case StampsExpiring(days):
                return _expiring(stamps.get(m.member, []), asof, days)
            case ToFullCard(r):
                return r.holds(asof.card_size - m.balance % asof.card_size)
            case Rfm(cells):
                if not lines:
                    return False
                recency = d - max(ln.day for ln in lines)
                freq = len({ln.sale for ln in window(lines, FREQUENCY_DAYS)})
                return rfm_cell(recency, freq) in cells
            case VisitChance(share):
                p = predicted.get(m.member)
                return p is not None and share.holds(p.p_visit_14d)
            case ValueTop(percent):
                p = predicted.get(m.member)
                return p is not None and value_rank(p.value_12m) <= percent / 100
            case ReorderDue(days):
                p = predicted.get(m.member)
                return p is not None and p.reorder_day is not None and p.reorder_day <= d + days
            case ChurnRiskIn(bands):
                p = predicted.get(m.member)
                return p is not None and p.churn_risk in bands
        raise AssertionError(node)  # pragma: no cover - every node is matched above

    return {m.member for m in population(facts, asof) if holds(root, m)}


def _expiring(events: list[StampFacts], asof: AsOf, days: int) -> bool:
    """Open stamps are the newest earned, up to the balance (the oldest are spent first)."""
    bounds = asof.expiry_window(days)
    if bounds is None:
        return False
    left = sum(e.stamps for e in events)
    for e in reversed(events):
        if left <= 0:
            return False
        if e.stamps > 0:
            if bounds[0] <= e.at < bounds[1]:
                return True
            left -= e.stamps
    return False
