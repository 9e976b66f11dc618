"""Read-model rows written straight into an HQ store (tests and benchmarks), and hypothesis
strategies for random members, sales and segment definitions."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import strategies as st

from tillstamp.hq.segments import (
    EPOCH,
    RFM_CELLS,
    Facts,
    LineFacts,
    MemberFacts,
    StampFacts,
)

MEMBER_COLS = ("member", "phone", "name", "external_id", "store", "enrolled_day", "birthday", "consent_whatsapp",
               "consent_email", "consent_sms", "balance", "tier", "badges", "merged_into", "erased")
LINE_COLS = ("sale", "line", "member", "store", "terminal", "receipt", "at_utc", "local_date", "day", "local_hour",
             "weekday", "sku", "name", "category", "qty", "amount", "voided")
EVENT_COLS = ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref", "body", "digest")


def member_row(m: MemberFacts, i: int) -> tuple[Any, ...]:
    return (m.member, f"+62812{i:07d}", f"Member {m.member}", f"X-{m.member}", m.store, m.enrolled_day,
            m.birthday, int("whatsapp" in m.consent), int("email" in m.consent), int("sms" in m.consent),
            m.balance, m.tier, json.dumps(list(m.badges)), m.merged_into, int(m.erased))


def line_row(ln: LineFacts, line: int) -> tuple[Any, ...]:
    date = EPOCH + dt.timedelta(days=ln.day)
    at = dt.datetime.combine(date, dt.time(3, 0), dt.UTC)
    return (ln.sale, line, ln.member, ln.store, f"{ln.store}-T1", ln.sale, at.isoformat(), date.isoformat(),
            ln.day, 10, date.weekday(), ln.sku, ln.sku.title(), ln.category, ln.qty, ln.amount, int(ln.voided))


def event_row(s: StampFacts) -> tuple[Any, ...]:
    return (f"E{s.gseq:08d}", "HQ", "HQ", s.gseq, "stamps.adjusted", s.member, s.at, s.stamps, None, "{}", "-")


def clear(store: Any) -> None:
    """Empty the read model and the events (between hypothesis examples)."""
    with store._tx() as c:
        for t in ("crm_members", "sale_lines", "member_days", "events", "segment_sizes", "segments"):
            store._x(c, f"DELETE FROM {t}")


def load(store: Any, facts: Facts) -> None:
    """Write `facts` into crm_members, sale_lines and events in one transaction."""
    members = [member_row(m, i) for i, m in enumerate(facts.members)]
    counts: dict[str, int] = {}
    lines = []
    for ln in facts.lines:
        n = counts.get(ln.sale, 0)
        counts[ln.sale] = n + 1
        lines.append(line_row(ln, n))
    bulk(store, "crm_members", MEMBER_COLS, members)
    bulk(store, "sale_lines", LINE_COLS, lines)
    bulk(store, "events", EVENT_COLS, [event_row(s) for s in facts.stamps])
    store.refresh_day_rollup()  # the lines went in directly, not through ingest


def bulk(store: Any, table: str, cols: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Insert rows in bulk: executemany on SQLite, COPY on PostgreSQL."""
    with store._tx() as c:
        if type(store).__name__ == "PgHqStore":
            with c.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        else:
            c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


# -- strategies ----------------------------------------------------------------------------

BASE = dt.date(2026, 3, 1)
BASE_DAY = (BASE - EPOCH).days
STORES = ("S1", "S2", "S3")
SKUS = {"A": "X", "B": "X", "C": "Y"}
TIERS = ("bronze", "silver", "gold")


@st.composite
def facts(draw: Any, n_members: int = 14) -> Facts:
    """A small random read model around BASE: members, sales (some guests, some after as-of) and stamp events."""
    members = []
    for i in range(draw(st.integers(1, n_members))):
        bday = draw(st.one_of(st.none(), st.dates(dt.date(1960, 1, 1), dt.date(2008, 12, 31)),
                              st.sampled_from([dt.date(2000, 2, 29), dt.date(1999, 2, 28), dt.date(1990, 3, 1)])))
        members.append(MemberFacts(
            member=f"M{i:02d}",
            store=draw(st.one_of(st.none(), st.sampled_from(STORES))),
            enrolled_day=draw(st.one_of(st.none(), st.integers(BASE_DAY - 200, BASE_DAY + 10))),
            birthday=bday.isoformat() if bday else None,
            consent=frozenset(draw(st.sets(st.sampled_from(("whatsapp", "email", "sms"))))),
            tier=draw(st.one_of(st.none(), st.sampled_from(TIERS))),
            badges=tuple(draw(st.lists(st.sampled_from(("b1", "B1", "b_2", 'b"3')), unique=True, max_size=2))),
            merged_into=draw(st.sampled_from([None] * 9 + ["M00"])),
            erased=draw(st.sampled_from([False] * 9 + [True])),
        ))
    ids = [m.member for m in members]
    lines = []
    for s in range(draw(st.integers(0, 40))):
        member = draw(st.one_of(st.none(), st.sampled_from(ids)))
        day = draw(st.integers(BASE_DAY - 420, BASE_DAY + 5))
        store = draw(st.sampled_from(STORES))
        voided = draw(st.sampled_from([False] * 6 + [True]))
        for _ in range(draw(st.integers(1, 3))):
            sku = draw(st.sampled_from(sorted(SKUS)))
            lines.append(LineFacts(f"S{s:03d}", member, store, day, sku, SKUS[sku], draw(st.integers(0, 3)),
                                   draw(st.integers(0, 200_000)), voided))
    stamps = []
    for g in range(draw(st.integers(0, 40))):
        at = dt.datetime.combine(BASE, dt.time(), dt.UTC) + dt.timedelta(
            hours=draw(st.integers(-24 * 400, 24 * 10)), seconds=draw(st.sampled_from([0, 0, 1])))
        stamps.append(StampFacts(draw(st.sampled_from(ids)), g + 1, at.isoformat(), draw(st.integers(-8, 12))))
    # As in a real read model (and what `hq verify` holds it to), a member's balance is the sum
    # of their stamp events, later ones included: the expiring leaf's plan reads it.
    totals: dict[str, int] = {}
    for s in stamps:
        totals[s.member] = totals.get(s.member, 0) + s.stamps
    members = [dataclasses.replace(m, balance=totals.get(m.member, 0)) for m in members]
    return Facts(members, lines, stamps)


def _range(lo: int, hi: int, extra: dict[str, Any] | None = None) -> Any:
    return st.fixed_dictionaries({}, optional={"min": st.integers(lo, hi), "max": st.integers(lo, hi)}).filter(
        lambda r: r and ("min" not in r or "max" not in r or r["min"] <= r["max"])).map(
        lambda r: {**r, **(extra or {})})


def _windowed(lo: int, hi: int) -> Any:
    return st.tuples(_range(lo, hi), st.one_of(st.none(), st.integers(1, 400))).map(
        lambda t: {**t[0], **({"within_days": t[1]} if t[1] else {})})


def leaves() -> Any:
    """One random leaf of every kind."""
    window = st.one_of(st.none(), st.integers(1, 400))
    return st.one_of(
        _range(0, 450).map(lambda r: {"last_visit_days": r}),
        _windowed(0, 6).map(lambda r: {"visits": r}),
        _windowed(0, 500_000).map(lambda r: {"spend": r}),
        st.tuples(st.sampled_from([("sku", "A"), ("sku", "C"), ("category", "X"), ("category", "Y")]),
                  st.integers(1, 3), window).map(
            lambda t: {"bought": {t[0][0]: t[0][1], "min_times": t[1], **({"within_days": t[2]} if t[2] else {})}}),
        st.lists(st.sampled_from(STORES), min_size=1, max_size=2).map(lambda s: {"store": s}),
        st.lists(st.sampled_from(TIERS), min_size=1, max_size=2).map(lambda s: {"tier": s}),
        _range(0, 35).map(lambda r: {"balance": r}),
        st.sampled_from(["b1", "B1", "b_2", "b%2", 'b"3', "3"]).map(lambda b: {"badge": b}),
        st.sampled_from(["whatsapp", "email", "sms"]).map(lambda c: {"consent": c}),
        st.integers(1, 90).map(lambda n: {"birthday_within_days": n}),
        st.just({"birthday_this_month": True}),
        st.integers(1, 120).map(lambda n: {"enrolled_within_days": n}),
        st.integers(1, 120).map(lambda n: {"stamps_expiring_within_days": n}),
        _range(1, 10).map(lambda r: {"stamps_to_full_card": r}),
        st.lists(st.sampled_from(sorted(RFM_CELLS)), min_size=1, max_size=3).map(lambda c: {"rfm": c}),
    )


def definitions() -> Any:
    """Random definitions: leaves under all/any/not, a few levels deep."""
    return st.recursive(leaves(), lambda kids: st.one_of(
        st.lists(kids, max_size=3).map(lambda k: {"all": k}),
        st.lists(kids, max_size=3).map(lambda k: {"any": k}),
        kids.map(lambda k: {"not": k})), max_leaves=6)
