"""The CRM read model, pure part: what a batch of events changes in `crm_members` and
`sale_lines` (docs/HQ.md). The store (`store_readmodel.py`) runs the SQL; this module decides.

Events come as tuples in EVENT_COLS order without the digest (`Incoming[:10]`, or a row of
`events`), so ingest, import and rebuild feed the very same function and cannot disagree.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from ..loyalty import events as ev
from ..loyalty.projections import add_months

DEFAULT_ZONE = "Asia/Jakarta"
MERGED = "member.merged"  # body {"into": SURVIVOR}; the event's member is the alias
EPOCH = dt.date(1970, 1, 1).toordinal()
# Kinds whose body the read model reads; the others only move balances.
_READ = frozenset({ev.SALE, ev.REFUNDED, ev.ENROLLED, ev.CONSENT, ev.MISSION, MERGED})
# Kinds whose stamps count for a tier earned on stamps.
TIER_KINDS = ev.EARNING_KINDS | {ev.REVERSED}
TierEvents = dict[str, tuple[list[str], list[int]]]  # member -> (times, stamps), in event order


def epoch_day(d: dt.date) -> int:
    """Days since 1970-01-01: how segments compare calendar days on every backend."""
    return d.toordinal() - EPOCH


@dataclass(frozen=True)
class LocalTime:
    """A UTC time seen in a store's zone."""

    at_utc: str
    local_date: str
    day: int
    hour: int
    weekday: int


def local_time(at: str, zone: str) -> LocalTime:
    """`at` (ISO with offset) in `zone`."""
    t = dt.datetime.fromisoformat(at)
    local = t.astimezone(ZoneInfo(zone))
    d = local.date()
    return LocalTime(t.astimezone(dt.UTC).isoformat(), d.isoformat(), epoch_day(d), local.hour, d.weekday())


def line_amounts(lines: Sequence[dict[str, Any]], discount: int) -> list[int]:
    """Each line's amount in minor units, a receipt-level discount shared in proportion.

    A line's amount is its `amount` when the body has one (imports), else qty x price; the
    discount is split by gross amount, rounding down, the remainder to the first lines, so
    the amounts add up to what the customer paid."""
    gross = [int(ln["amount"]) if "amount" in ln else int(ln.get("qty", 0)) * int(ln.get("price", 0))
             for ln in lines]
    total = sum(gross)
    if not discount or total <= 0:
        return gross
    shares = [discount * g // total for g in gross]
    left = discount - sum(shares)
    for i, g in enumerate(gross):
        if not left:
            break
        if g - shares[i] > 0:
            shares[i] += 1
            left -= 1
    return [g - s for g, s in zip(gross, shares, strict=True)]


@dataclass(frozen=True)
class Refund:
    """A refund as the read model applies it: which sale (store, terminal, sale key) and how
    many of each SKU come back."""

    store: str
    terminal: str
    ref: str
    lines: dict[str, int]
    receipt: str | None


@dataclass(slots=True)  # one per member per batch: no __dict__ each (fewer objects for the GC)
class MemberChange:
    """What a batch says about one member, folded in event order."""

    store: str | None = None
    enrolled_at: str | None = None
    enrolled_store: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    badges: list[str] = field(default_factory=list)
    balance: int = 0
    stamps_events: bool = False  # moved stamps: a tier earned on stamps may change
    spend_events: bool = False  # a sale, claim or refund: a tier earned on spend may change


@dataclass
class CrmBatch:
    """The read-model effect of a run of events, before any SQL."""

    lines: list[tuple[Any, ...]] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    members: dict[str, MemberChange] = field(default_factory=dict)

    def member(self, m: str) -> MemberChange:
        """The change record of member `m`, created on first use."""
        got = self.members.get(m)
        if got is None:
            got = self.members[m] = MemberChange()
        return got


def sale_rows(sale_id: str, terminal: str, store: str, member: str | None, at: str,
              body: dict[str, Any], zone: str) -> list[tuple[Any, ...]]:
    """The `sale_lines` rows of one `sale.recorded` event (SALE_LINE_COLS order)."""
    lt = local_time(at, str(body.get("zone") or zone))
    lines = body.get("lines") or []
    amounts = line_amounts(lines, int(body.get("discount", 0) or 0))
    receipt = str(body.get("receipt", ""))
    return [(sale_id, i, member, store, terminal, receipt, lt.at_utc, lt.local_date, lt.day, lt.hour, lt.weekday,
             str(ln.get("sku", "")), ln.get("name"), ln.get("category"), int(ln.get("qty", 0)), amount, 0)
            for i, (ln, amount) in enumerate(zip(lines, amounts, strict=True))]


SALE_LINE_COLS = ("sale", "line", "member", "store", "terminal", "receipt", "at_utc", "local_date", "day",
                  "local_hour", "weekday", "sku", "name", "category", "qty", "amount", "voided")


def digest(events: Iterable[Sequence[Any]], zone: str = DEFAULT_ZONE, into: CrmBatch | None = None,
           tiers: TierEvents | None = None) -> CrmBatch:
    """Fold events (EVENT_COLS order, body as JSON text) into a CrmBatch, in order; `into`
    (the fold of the events before, extended in place) goes on from there, so a batch can be
    folded chunk by chunk. `tiers`, when given, is extended as `tier_events` would extend it, in
    the same pass (one walk over the events instead of two)."""
    out = CrmBatch() if into is None else into
    members = out.members
    for e in events:
        eid, terminal, store, _seq, kind, member, at, stamps, ref, body_text = e[:10]
        mc = None
        if member is not None:
            mc = members.get(member)
            if mc is None:
                mc = members[member] = MemberChange(store)
            elif mc.store is None:
                mc.store = store
            if stamps:
                mc.balance += int(stamps)
                mc.stamps_events = True
                if tiers is not None and kind in TIER_KINDS:
                    got = tiers.get(member)
                    if got is None:
                        got = tiers[member] = ([], [])
                    got[0].append(at)
                    got[1].append(int(stamps))
            if kind == ev.CLAIMED:
                mc.spend_events = True
        if kind not in _READ:
            continue
        body = json.loads(body_text) if isinstance(body_text, str) else dict(body_text)
        if kind == ev.SALE:
            out.lines.extend(sale_rows(eid, terminal, store, member, at, body, zone))
            if mc is not None:
                mc.spend_events = True
        elif kind == ev.REFUNDED:
            if ref is not None:
                qty = {str(k): int(v) for k, v in (body.get("lines") or {}).items()}
                out.refunds.append(Refund(store, terminal, ref, qty, body.get("receipt")))
            if mc is not None:
                mc.spend_events = True
        elif mc is None:
            continue
        elif kind == ev.ENROLLED:
            if mc.enrolled_at is None:
                mc.enrolled_at, mc.enrolled_store = at, store
            mc.consent.update(consent_of(body))
        elif kind == ev.CONSENT:
            mc.consent.update(consent_of(body))
        elif kind == ev.MISSION:
            badge = body.get("badge")
            if badge and badge not in mc.badges:
                mc.badges.append(str(badge))
        elif kind == MERGED and body.get("into") and member is not None:
            out.merges.append((member, str(body["into"])))
    return out


def consent_of(body: dict[str, Any]) -> dict[str, bool]:
    """Channels a consent body sets: `{"consent": {"email": true, ...}}` (as enrolment writes
    it) or `{"channel": "email", "granted": true}`; unknown channels are ignored."""
    got: dict[str, bool] = {}
    if isinstance(body.get("consent"), dict):
        got = {str(k): bool(v) for k, v in body["consent"].items()}
    elif isinstance(body.get("channel"), str):
        got = {body["channel"]: bool(body.get("granted", body.get("value", False)))}
    return {k: v for k, v in got.items() if k in ev.CHANNELS}


def refunded_lines(sold: Sequence[dict[str, Any]], discount: int, current: dict[int, int],
                   back: dict[str, int]) -> tuple[dict[int, tuple[int, int]], bool]:
    """Apply a refund to a sale's lines: ({line: (net qty, net amount)}, voided).

    `sold` are the sale event's lines, `current` each line's net quantity so far, `back` the
    quantities refunded per SKU, taken from that SKU's lines in order. A line's net amount is
    its sold amount times net/sold quantity (rounded down), so a line refunded in full is 0.
    The sale is voided when no line with a quantity has any left."""
    amounts = line_amounts(sold, discount)
    net = dict(current)
    want = dict(back)
    for i, ln in enumerate(sold):
        sku = str(ln.get("sku", ""))
        take = min(want.get(sku, 0), net.get(i, 0))
        if take > 0:
            net[i] -= take
            want[sku] -= take
    out = {}
    for i, ln in enumerate(sold):
        q = int(ln.get("qty", 0))
        if i in net and net[i] != current.get(i):
            out[i] = (net[i], amounts[i] * net[i] // q if q else amounts[i])
    counted = [i for i, ln in enumerate(sold) if int(ln.get("qty", 0)) > 0]
    voided = bool(counted) and all(net.get(i, 0) <= 0 for i in counted)
    return out, voided


@dataclass(frozen=True)
class Figures:
    """Per-member figures computed from `sale_lines`."""

    first_day: int | None
    last_day: int | None
    visits: int
    spend: int
    fav_category: str | None
    fav_store: str | None
    usual_hour: int | None
    usual_weekday: int | None


def mode(counts: dict[Any, tuple[int, int]]) -> Any:
    """The value seen on most visits; ties go to more spend, then the smallest value."""
    if not counts:
        return None
    return min(counts.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[0]


Visit = tuple[str, int, int, int, int]  # (store, day, hour, weekday, amount) of one non-voided sale


def figures_of(visits: dict[str, list[Visit]], cats: dict[str, dict[Any, tuple[int, int]]]) -> dict[str, Figures]:
    """Per-member figures from each member's visits and (visits, spend) per category."""
    out = {}
    for m, vs in visits.items():
        by: list[dict[Any, tuple[int, int]]] = [{}, {}, {}]
        for store, _day, hour, weekday, amount in vs:
            for d, key in zip(by, (store, hour, weekday), strict=True):
                n, spent = d.get(key, (0, 0))
                d[key] = (n + 1, spent + amount)
        days = [v[1] for v in vs]
        out[m] = Figures(min(days), max(days), len(vs), sum(v[4] for v in vs), mode(cats.get(m, {})),
                         mode(by[0]), mode(by[1]), mode(by[2]))
    return out


def figures_from_lines(lines: Iterable[Sequence[Any]]) -> dict[str, Figures]:
    """`figures_of` computed from sale_lines rows (SALE_LINE_COLS order) held in memory: the
    same grouping the SQL does, for lines just built whose members have no others."""
    sales: dict[tuple[str, str], list[Any]] = {}
    cats: dict[str, dict[Any, list[Any]]] = {}
    for r in lines:
        member, voided = r[2], r[16]
        if member is None or voided:
            continue
        v = sales.get((member, r[0]))
        if v is None:
            sales[(member, r[0])] = [r[3], r[8], r[9], r[10], r[15]]
        else:
            v[4] += r[15]
        if r[13] is not None:
            c = cats.setdefault(member, {}).setdefault(r[13], [set(), 0])
            c[0].add(r[0])
            c[1] += r[15]
    visits: dict[str, list[Visit]] = {}
    for (member, _sale), v in sales.items():
        visits.setdefault(member, []).append((v[0], v[1], v[2], v[3], v[4]))
    return figures_of(visits, {m: {k: (len(x[0]), x[1]) for k, x in d.items()} for m, d in cats.items()})


def days_from_lines(lines: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """`member_days` rows (member, day, store, visits, spend) of sale_lines rows held in memory:
    the same grouping as the SQL, for lines just built whose members have no others."""
    groups: dict[tuple[str, int, str], tuple[set[str], list[int]]] = {}
    for r in lines:
        if r[2] is None or r[16]:
            continue
        g = groups.get((r[2], r[8], r[3]))
        if g is None:
            g = groups[(r[2], r[8], r[3])] = (set(), [0])
        g[0].add(r[0])
        g[1][0] += r[15]
    return [(*k, len(sales), spend[0]) for k, (sales, spend) in sorted(groups.items())]


class TierStep(NamedTuple):
    """What a batch's own tier events add to a member's kept window sums (docs/HQ.md, "Tier"),
    taken from the batch alone: valid when the kept sums end at or before `upto`.

    `upto` is the batch's last tier event of the member, `since` the start of the window ending
    there, `ystart` the start of that local year (all ISO UTC, compared as text like the stored
    times); `now` the stamps inside the window, `year` those inside the window ending at the
    year's start, `oldest` the oldest event inside the window (None: none)."""

    upto: str
    since: str
    ystart: str
    now: int
    year: int
    oldest: str | None




def tier_events(events: Iterable[Sequence[Any]], into: TierEvents | None = None) -> TierEvents:
    """Each member's times and stamps of the events that count for a tier earned on stamps
    (`into` extended in place). Two lists a member rather than a tuple an event: fewer objects."""
    out: TierEvents = {} if into is None else into
    for f in events:  # EVENT_COLS order: kind 4, member 5, at 6, stamps 7
        if f[5] is not None and f[7] and f[4] in TIER_KINDS:
            got = out.get(f[5])
            if got is None:
                got = out[f[5]] = ([], [])
            got[0].append(f[6])
            got[1].append(int(f[7]))
    return out


def tier_steps(events: TierEvents, zone: ZoneInfo, window_months: int) -> dict[str, TierStep]:
    """The TierStep of each member from their batch events (`tier_events`)."""
    years: dict[int, tuple[str, str]] = {}  # local year -> (its window's start, its start), ISO UTC
    dates: dict[str, str] = {}  # a date -> that date `window_months` earlier (clamped)
    out = {}
    for m, (ats, stamps) in events.items():
        upto = max(ats)
        since, year = _window_start(upto, zone, window_months, dates)
        if year not in years:
            start = dt.datetime(year, 1, 1, tzinfo=zone)
            years[year] = (add_months(start, -window_months).astimezone(dt.UTC).isoformat(),
                           start.astimezone(dt.UTC).isoformat())
        ysince, ystart = years[year]
        now = year_sum = 0
        oldest = None
        for at, n in zip(ats, stamps, strict=True):
            if at > since:
                now += n
                if oldest is None or at < oldest:
                    oldest = at
            if ysince < at <= ystart:
                year_sum += n
        out[m] = TierStep(upto, since, ystart, now, year_sum, oldest)
    return out


def _window_start(at: str, zone: ZoneInfo, months: int, dates: dict[str, str]) -> tuple[str, int]:
    """(`at` moved `months` earlier, as ISO UTC; `at`'s year in `zone`) for a stored UTC time.

    Months move the date only (clamped like `add_months`), so the text keeps its time of day
    and only its date changes: one date computation per distinct date of a batch rather than
    a parse and two conversions per member (the batch's members mostly share a few dates)."""
    if len(at) < 25 or not at.endswith("+00:00") or at[4] != "-" or at[10] != "T":  # not HQ's stored form
        t = dt.datetime.fromisoformat(at)
        return add_months(t, -months).astimezone(dt.UTC).isoformat(), t.astimezone(zone).year
    day = at[:10]
    earlier = dates.get(day)
    if earlier is None:
        earlier = dates[day] = add_months(dt.datetime.fromisoformat(day), -months).date().isoformat()
    year = int(at[:4])
    if at[5:10] in ("01-01", "12-31"):  # the zone's year may differ from UTC's only near New Year
        year = dt.datetime.fromisoformat(at).astimezone(zone).year
    return earlier + at[10:], year
