"""A history checker for sync: given what every till committed and what HQ holds, list
every broken promise (exactly once at HQ, balances = sum of events, overdrafts within the
configured bound, cursors never moving back)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event


@dataclass
class History:
    """What happened: till ledgers, HQ's events and balances, and every cursor value seen."""

    tills: Mapping[str, Sequence[Event]]
    hq_events: Sequence[Event]
    hq_balances: Mapping[str, int]
    overdraft_bound: int
    cursors: Mapping[str, Sequence[int]] = field(default_factory=dict)


def check(h: History) -> list[str]:
    """Every problem found; empty when the history keeps all promises."""
    problems = []
    at_hq = Counter(e.id for e in h.hq_events)
    for eid, n in at_hq.items():
        if n > 1:
            problems.append(f"event {eid} is at HQ {n} times")
    till_ids = set()
    for terminal, events in h.tills.items():
        for e in events:
            till_ids.add(e.id)
            if at_hq[e.id] != 1:
                problems.append(f"{terminal} seq {e.seq} ({e.id}) is at HQ {at_hq[e.id]} times")
    for e in h.hq_events:
        if e.id not in till_ids and e.terminal != "HQ":
            problems.append(f"event {e.id} at HQ comes from no till")
    sums: Counter[str] = Counter()
    for e in h.hq_events:
        if e.member:
            sums[e.member] += e.stamps
    for member in set(sums) | set(h.hq_balances):
        if sums[member] != h.hq_balances.get(member, 0):
            problems.append(f"member {member}: balance {h.hq_balances.get(member, 0)} != sum of events {sums[member]}")
        if sums[member] < 0:
            problems.append(f"member {member}: negative balance {sums[member]} left after the merge")
    for e in h.hq_events:
        if e.kind == ev.ADJUSTED and e.terminal == "HQ" and e.stamps > h.overdraft_bound:
            problems.append(f"member {e.member}: overdraft {e.stamps} beyond the bound {h.overdraft_bound}")
    for name, values in h.cursors.items():
        for before, after in pairwise(values):
            if after < before:
                problems.append(f"cursor {name} went back from {before} to {after}")
                break
    return problems
