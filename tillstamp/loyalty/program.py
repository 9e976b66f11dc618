"""A loyalty program: earning rules, stamp card, rewards, tiers, missions and expiry.

Programs are written in TOML (see examples/program.toml) and parsed once into frozen
dataclasses; every rule the rest of the code relies on is checked here, so a bad file is
refused with the path of the offending key instead of failing at the till later.
"""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MISSION_KINDS = ("visits_in_week", "distinct_skus", "spend_target", "checkin_streak")
PERIODS = ("week", "month", "year", "ever")
OFFER_PERIODS = ("week", "month", "program")

# Upper bounds. Without them a program with `valid_days = 999999999` or `multiplier = 1e308`
# was accepted and then every sale crashed (a date past year 9999, stamps beyond any event's
# range) on every till that pulled it. The bounds are generous for any real shop.
MAX_STAMPS_RULE = 1_000  # stamps one rule gives (per visit, per unit, per step), a card's size
MAX_COST = 1_000_000  # a reward's cost, an offline cap (stamps)
MAX_MONEY = 10**12  # minor units: Rp 1.000.000.000.000
MAX_MULTIPLIER = Fraction(10)
MAX_MONTHS = 120  # expiry, tier windows: ten years
MAX_DAYS = 3_650  # claim validity, warnings: ten years
MAX_TAG_AGE_DAYS = 90  # an offer on segment data older than a quarter is not targeting anyone


class ProgramError(ValueError):
    """The program file is not valid; the message names the offending key."""


@dataclass(frozen=True)
class VisitRule:
    """Stamps for a visit, optionally only above a minimum spend."""

    stamps: int
    min_spend: int = 0


@dataclass(frozen=True)
class SpendRule:
    """`stamps` for every `every` spent (minor units), at most `cap` per sale (0: no cap)."""

    every: int
    stamps: int = 1
    cap: int = 0


@dataclass(frozen=True)
class ItemRule:
    """Stamps per unit bought of one SKU or of any SKU in one category."""

    stamps: int
    sku: str | None = None
    category: str | None = None

    def matches(self, sku: str, category: str | None) -> bool:
        """True when the line's SKU or category is the one this rule names."""
        return (self.sku is not None and self.sku == sku) or (
            self.category is not None and self.category == category
        )


@dataclass(frozen=True)
class Bonus:
    """A time-boxed multiplier (happy hour, weekend); windows use the store's local time."""

    name: str
    multiplier: Fraction
    days: tuple[str, ...] = ()
    start_time: dt.time | None = None
    end_time: dt.time | None = None
    start_date: dt.date | None = None
    end_date: dt.date | None = None

    def active(self, local: dt.datetime) -> bool:
        """True when a sale at this local time falls inside the window."""
        if self.days and DAYS[local.weekday()] not in self.days:
            return False
        if self.start_date and local.date() < self.start_date:
            return False
        if self.end_date and local.date() > self.end_date:
            return False
        t = local.time().replace(tzinfo=None)
        if self.start_time and t < self.start_time:
            return False
        return not (self.end_time and t >= self.end_time)


@dataclass(frozen=True)
class Offer:
    """Extra stamps for members of a head-office segment, at most once per member per period.

    `multiplier` multiplies the sale's stamps (the offer is the extra part); `stamps` is a fixed
    number of extra stamps instead. `window` (days, hours, dates) limits when it applies."""

    id: str
    name: str
    segment: str
    multiplier: Fraction | None = None
    stamps: int = 0
    per: str = "month"  # "week" | "month" | "program"
    window: Bonus | None = None

    def extra(self, earned: int) -> int:
        """Extra stamps this offer gives on a sale that earned `earned` stamps."""
        if self.multiplier is not None:
            return math.floor(earned * (self.multiplier - 1))
        return self.stamps


@dataclass(frozen=True)
class Exclusions:
    """Lines that earn nothing: reward lines, gift cards, anything paid with stamps."""

    skus: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset({"reward", "giftcard"})


@dataclass(frozen=True)
class Card:
    """The stamp card: how many stamps fill it and which reward a full card gives."""

    size: int
    reward: str


@dataclass(frozen=True)
class Reward:
    """A catalogue entry: what it costs in stamps and which tiers may redeem it."""

    id: str
    name: str
    cost: int
    tiers: frozenset[str] = frozenset()  # empty: every tier

    def allowed_for(self, tier: str) -> bool:
        """True when a member of this tier may redeem it."""
        return not self.tiers or tier in self.tiers


@dataclass(frozen=True)
class Tier:
    """A tier reached at `threshold` of the qualifying measure, with an earn multiplier."""

    id: str
    name: str
    threshold: int
    multiplier: Fraction = Fraction(1)


@dataclass(frozen=True)
class Tiering:
    """How tiers qualify: stamps earned or spend over a rolling window; when they drop."""

    qualify_on: str = "stamps"  # "stamps" | "spend"
    window_months: int = 12
    downgrade: str = "period_end"  # "period_end" | "immediate"


@dataclass(frozen=True)
class Mission:
    """A goal that awards bonus stamps and a badge once per period."""

    id: str
    name: str
    kind: str
    target: int
    stamps: int
    badge: str | None
    period: str


@dataclass(frozen=True)
class Expiry:
    """Stamps expire `months` after they were earned (0: never); warn `warn_days` before."""

    months: int = 0
    warn_days: int = 30


@dataclass(frozen=True)
class OfflineCaps:
    """Bounds on redemption while the till has not heard from head office (rule 7)."""

    max_per_member: int = 20
    max_per_terminal: int = 200
    max_offline_hours: int = 72
    max_clock_skew_s: int = 300


@dataclass(frozen=True)
class ClaimPolicy:
    """Receipt-claim QR: how long it stays valid and the URL it is printed under."""

    valid_days: int = 7
    url: str = "HTTPS://KLAIM.TILLSTAMP.ID/"


@dataclass(frozen=True)
class Program:
    """A whole loyalty program, validated."""

    name: str
    version: int
    currency: str
    timezone: str
    card: Card
    visit: VisitRule | None
    spend: SpendRule | None
    items: tuple[ItemRule, ...]
    bonuses: tuple[Bonus, ...]
    exclusions: Exclusions
    rewards: tuple[Reward, ...]
    tiers: tuple[Tier, ...]
    tiering: Tiering
    missions: tuple[Mission, ...]
    expiry: Expiry
    offline: OfflineCaps
    claim: ClaimPolicy
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    offers: tuple[Offer, ...] = ()
    max_tag_age_days: int = 7  # a tag from head office older than this is ignored at the till

    @property
    def zone(self) -> ZoneInfo:
        """The store's time zone, for rules about days and weeks."""
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances, so this is cheap

    def reward(self, reward_id: str) -> Reward:
        """The reward with this id, or KeyError."""
        for r in self.rewards:
            if r.id == reward_id:
                return r
        raise KeyError(reward_id)

    def tier(self, tier_id: str) -> Tier:
        """The tier with this id, or KeyError."""
        for t in self.tiers:
            if t.id == tier_id:
                return t
        raise KeyError(tier_id)


def load_program(path: str | Path) -> Program:
    """Read and validate a program TOML file."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProgramError(f"{p}: no such program file") from None
    except tomllib.TOMLDecodeError as e:
        raise ProgramError(f"{p}: not valid TOML: {e}") from None
    return parse_program(raw)


def parse_program(raw: dict[str, Any]) -> Program:
    """Validate a program already parsed from TOML (or JSON from head office)."""
    r = _Reader(raw, "")
    prog = r.table("program")
    name = prog.text("name")
    tz = prog.text("timezone", "Asia/Jakarta")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ProgramError(f"program.timezone: unknown time zone {tz!r}") from None

    card_t = r.table("card")
    card = Card(size=card_t.integer("size", minimum=1, maximum=MAX_STAMPS_RULE), reward=card_t.text("reward"))

    earn = r.table("earn", required=False)
    visit = spend = None
    if earn.has("visit"):
        v = earn.table("visit")
        visit = VisitRule(stamps=v.integer("stamps", minimum=0, maximum=MAX_STAMPS_RULE),
                          min_spend=v.integer("min_spend", 0, minimum=0, maximum=MAX_MONEY))
    if earn.has("spend"):
        s = earn.table("spend")
        spend = SpendRule(
            every=s.integer("every", minimum=1, maximum=MAX_MONEY),
            stamps=s.integer("stamps", 1, minimum=1, maximum=MAX_STAMPS_RULE),
            cap=s.integer("cap", 0, minimum=0, maximum=MAX_STAMPS_RULE)
        )
    items = []
    for it in earn.tables("items"):
        sku, cat = it.opt_text("sku"), it.opt_text("category")
        if (sku is None) == (cat is None):
            raise ProgramError(f"{it.path}: give exactly one of sku or category")
        items.append(ItemRule(stamps=it.integer("stamps", minimum=1, maximum=MAX_STAMPS_RULE), sku=sku,
                              category=cat))
    bonuses = []
    for b in earn.tables("bonus"):
        if b.has("segment"):
            # A till from before offers reads every [[earn.bonus]] as a bonus on every sale: a
            # segment offer there would multiply everyone's stamps on such a till.
            raise ProgramError(f"{b.path}.segment: an offer for a segment goes in [[earn.offer]], "
                               f"not [[earn.bonus]] (older tills would give it to every member)")
        bonuses.append(_window(b, b.text("name"),
                               b.fraction("multiplier", minimum=Fraction(1), maximum=MAX_MULTIPLIER)))
    offers = [_offer(o) for o in earn.tables("offer")]
    if len({o.id for o in offers}) != len(offers):
        raise ProgramError("earn.offer: offer ids must be unique")
    max_tag_age = earn.integer("max_tag_age_days", 7, minimum=1, maximum=MAX_TAG_AGE_DAYS)
    ex = earn.table("exclude", required=False)
    exclusions = Exclusions(
        skus=frozenset(ex.items("skus", [])),
        categories=frozenset(ex.items("categories", ["reward", "giftcard"])),
    )
    if visit is None and spend is None and not items:
        raise ProgramError("earn: the program has no earning rule (visit, spend or items)")

    tiers = []
    for t in r.tables("tiers"):
        tiers.append(
            Tier(
                id=t.text("id"),
                name=t.text("name"),
                threshold=t.integer("threshold", minimum=0, maximum=MAX_MONEY),
                multiplier=t.fraction("multiplier", Fraction(1), minimum=Fraction(1), maximum=MAX_MULTIPLIER),
            )
        )
    if not tiers:
        tiers = [
            Tier("bronze", "Bronze", 0),
            Tier("silver", "Silver", 30, Fraction(5, 4)),
            Tier("gold", "Gold", 80, Fraction(3, 2)),
        ]
    tiers.sort(key=lambda t: t.threshold)
    if tiers[0].threshold != 0:
        raise ProgramError("tiers: the lowest tier must have threshold 0")
    if len({t.id for t in tiers}) != len(tiers):
        raise ProgramError("tiers: tier ids must be unique")
    tier_ids = {t.id for t in tiers}
    tr = r.table("tiering", required=False)
    tiering = Tiering(
        qualify_on=tr.choice("qualify_on", ("stamps", "spend"), "stamps"),
        window_months=tr.integer("window_months", 12, minimum=1, maximum=MAX_MONTHS),
        downgrade=tr.choice("downgrade", ("period_end", "immediate"), "period_end"),
    )

    rewards = []
    for rw in r.tables("rewards"):
        allowed = frozenset(rw.items("tiers", []))
        unknown = allowed - tier_ids
        if unknown:
            raise ProgramError(f"{rw.path}.tiers: unknown tier {min(unknown)!r}")
        rewards.append(
            Reward(id=rw.text("id"), name=rw.text("name"), cost=rw.integer("cost", minimum=1, maximum=MAX_COST), tiers=allowed)
        )
    if len({rw.id for rw in rewards}) != len(rewards):
        raise ProgramError("rewards: reward ids must be unique")
    if card.reward not in {rw.id for rw in rewards}:
        raise ProgramError(f"card.reward: {card.reward!r} is not in the rewards catalogue")

    missions = []
    defaults = {
        "visits_in_week": "week",
        "distinct_skus": "ever",
        "spend_target": "month",
        "checkin_streak": "ever",
    }
    for m in r.tables("missions"):
        kind = m.choice("kind", MISSION_KINDS)
        missions.append(
            Mission(
                id=m.text("id"),
                name=m.text("name"),
                kind=kind,
                target=m.integer("target", minimum=1, maximum=MAX_MONEY),
                stamps=m.integer("stamps", 0, minimum=0, maximum=MAX_STAMPS_RULE),
                badge=m.opt_text("badge"),
                period=m.choice("period", PERIODS, defaults[kind]),
            )
        )
    if len({m.id for m in missions}) != len(missions):
        raise ProgramError("missions: mission ids must be unique")

    e = r.table("expiry", required=False)
    expiry = Expiry(months=e.integer("months", 0, minimum=0, maximum=MAX_MONTHS),
                    warn_days=e.integer("warn_days", 30, minimum=0, maximum=MAX_DAYS))
    o = r.table("offline", required=False)
    offline = OfflineCaps(
        max_per_member=o.integer("max_per_member", 20, minimum=0, maximum=MAX_COST),
        max_per_terminal=o.integer("max_per_terminal", 200, minimum=0, maximum=MAX_COST),
        max_offline_hours=o.integer("max_offline_hours", 72, minimum=0, maximum=MAX_DAYS * 24),
        max_clock_skew_s=o.integer("max_clock_skew_s", 300, minimum=0, maximum=86_400),
    )
    c = r.table("claim", required=False)
    claim = ClaimPolicy(valid_days=c.integer("valid_days", 7, minimum=1, maximum=MAX_DAYS),
                        url=c.text("url", ClaimPolicy.url))
    return Program(
        name=name,
        version=prog.integer("version", 1, minimum=1, maximum=2**31 - 1),
        currency=prog.text("currency", "IDR"),
        timezone=tz,
        card=card,
        visit=visit,
        spend=spend,
        items=tuple(items),
        bonuses=tuple(bonuses),
        exclusions=exclusions,
        rewards=tuple(rewards),
        tiers=tuple(tiers),
        tiering=tiering,
        missions=tuple(missions),
        expiry=expiry,
        offline=offline,
        claim=claim,
        source=raw,
        offers=tuple(offers),
        max_tag_age_days=max_tag_age,
    )


def _window(b: _Reader, name: str, multiplier: Fraction) -> Bonus:
    """The time window of a bonus or an offer (days, hours, dates), as a Bonus."""
    days = tuple(d.lower()[:3] for d in b.items("days", []))
    for d in days:
        if d not in DAYS:
            raise ProgramError(f"{b.path}.days: {d!r} is not a day ({', '.join(DAYS)})")
    return Bonus(name=name, multiplier=multiplier, days=days, start_time=b.time("from"), end_time=b.time("to"),
                 start_date=b.date("start"), end_date=b.date("end"))


def _slug(r: _Reader, key: str) -> str:
    """An id or a segment name: 1-64 of a-z, 0-9, '-' and '_' (what segment names allow)."""
    val = r.text(key)
    if len(val) > 64 or not all(c in "abcdefghijklmnopqrstuvwxyz0123456789-_" for c in val):
        raise ProgramError(f"{r._key(key)}: use 1-64 of a-z, 0-9, '-' and '_', got {val!r}")
    return val


def _offer(o: _Reader) -> Offer:
    """One [[earn.offer]]: a segment, exactly one of multiplier or stamps, a period, a window."""
    if o.has("multiplier") == o.has("stamps"):
        raise ProgramError(f"{o.path}: give exactly one of multiplier or stamps")
    multiplier = None
    stamps = 0
    if o.has("multiplier"):
        multiplier = o.fraction("multiplier", maximum=MAX_MULTIPLIER)
        if multiplier <= 1:
            raise ProgramError(f"{o.path}.multiplier: must be more than 1, got {o.data['multiplier']}")
    else:
        stamps = o.integer("stamps", minimum=1, maximum=MAX_STAMPS_RULE)
    name = o.text("name", o.data.get("id") or "offer")
    window = _window(o, name, Fraction(1))
    return Offer(id=_slug(o, "id"), name=name, segment=_slug(o, "segment"), multiplier=multiplier, stamps=stamps,
                 per=o.choice("per", OFFER_PERIODS, "month"),
                 window=window if (window.days or window.start_time or window.end_time or window.start_date
                                   or window.end_date) else None)


class _Reader:
    """Typed access to one TOML table that reports errors by dotted path."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ProgramError(f"{path or 'program'}: expected a table")
        self.data = data
        self.path = path

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str, required: bool = True) -> _Reader:
        if key not in self.data:
            if required:
                raise ProgramError(f"{self._key(key)}: missing table [{self._key(key)}]")
            return _Reader({}, self._key(key))
        return _Reader(self.data[key], self._key(key))

    def tables(self, key: str) -> list[_Reader]:
        val = self.data.get(key, [])
        if not isinstance(val, list):
            raise ProgramError(f"{self._key(key)}: expected an array of tables [[{self._key(key)}]]")
        return [_Reader(v, f"{self._key(key)}[{i}]") for i, v in enumerate(val)]

    def _get(self, key: str, default: Any, kind: type | tuple[type, ...], what: str) -> Any:
        if key not in self.data:
            if default is _REQUIRED:
                raise ProgramError(f"{self._key(key)}: missing")
            return default
        val = self.data[key]
        if isinstance(val, bool) or not isinstance(val, kind):
            raise ProgramError(f"{self._key(key)}: expected {what}, got {val!r}")
        return val

    def text(self, key: str, default: Any = None) -> str:
        val = self._get(key, _REQUIRED if default is None else default, str, "text")
        if not val.strip():
            raise ProgramError(f"{self._key(key)}: must not be empty")
        return val

    def opt_text(self, key: str) -> str | None:
        return self._get(key, None, str, "text")

    def integer(self, key: str, default: Any = None, minimum: int | None = None,
                maximum: int | None = None) -> int:
        val = self._get(key, _REQUIRED if default is None else default, int, "a whole number")
        if minimum is not None and val < minimum:
            raise ProgramError(f"{self._key(key)}: must be at least {minimum}, got {val}")
        if maximum is not None and val > maximum:
            raise ProgramError(f"{self._key(key)}: must be at most {maximum:,}, got {val:,}")
        return val

    def fraction(self, key: str, default: Any = None, minimum: Fraction | None = None,
                 maximum: Fraction | None = None) -> Fraction:
        val = self._get(key, _REQUIRED if default is None else default, (int, float, Fraction), "a number")
        if isinstance(val, float) and not math.isfinite(val):
            raise ProgramError(f"{self._key(key)}: expected a finite number, got {val!r}")
        frac = Fraction(str(val)) if isinstance(val, float) else Fraction(val)
        if minimum is not None and frac < minimum:
            raise ProgramError(f"{self._key(key)}: must be at least {float(minimum):g}, got {val}")
        if maximum is not None and frac > maximum:
            raise ProgramError(f"{self._key(key)}: must be at most {float(maximum):g}, got {val}")
        return frac

    def items(self, key: str, default: Any = None) -> list[Any]:
        return list(self._get(key, _REQUIRED if default is None else default, list, "a list"))

    def choice(self, key: str, choices: tuple[str, ...], default: Any = None) -> str:
        val = self.text(key, default)
        if val not in choices:
            raise ProgramError(f"{self._key(key)}: {val!r} is not one of {', '.join(choices)}")
        return val

    def time(self, key: str) -> dt.time | None:
        val = self._get(key, None, (str, dt.time), "a time like '14:00'")
        if val is None or isinstance(val, dt.time):
            return val
        try:
            return dt.time.fromisoformat(val)
        except ValueError:
            raise ProgramError(f"{self._key(key)}: {val!r} is not a time like '14:00'") from None

    def date(self, key: str) -> dt.date | None:
        val = self._get(key, None, (str, dt.date), "a date like 2026-12-01")
        if val is None:
            return None
        if isinstance(val, dt.date):
            return val
        try:
            return dt.date.fromisoformat(val)
        except ValueError:
            raise ProgramError(f"{self._key(key)}: {val!r} is not a date like 2026-12-01") from None


_REQUIRED = object()
