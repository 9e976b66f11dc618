"""Checks on the till's ledger: the hash chain, the sequence, and that the projections are
exactly what the events say (`tillstamp ledger verify|rebuild`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..loyalty.events import Event, content_hash
from .store import Store, _event


@dataclass
class Report:
    """What a verification found; `ok` only when `problems` is empty."""

    events: int = 0
    members: int = 0
    last_seq: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "events": self.events,
            "members": self.members,
            "last_seq": self.last_seq,
            "problems": self.problems,
        }


def verify(store: Store, max_problems: int = 20, *, shown: Callable[[str], int] | None = None) -> Report:
    """Check the chain and sequence of every event, balances, and a rebuild against the live projections.

    `shown` is the balance the till shows (`Service.balance`, the local view of rule 6): on a
    till linked to head office a member may spend here what they earned elsewhere, so the sum
    of this till's own events may be negative while the member's balance is not."""
    shown = shown or (lambda member: sums.get(member, 0))
    report = Report(members=store.count_members())
    prev_hash = ""
    expected = 1
    for row in store.iter_rows():
        report.events += 1
        e: Event = _event(row)
        if e.seq != expected:
            report.problems.append(f"seq {e.seq}: expected {expected} (a gap or reorder)")
            expected = e.seq
        expected += 1
        h = content_hash(e, prev_hash, row["body"].encode())
        if h != row["hash"]:
            report.problems.append(f"seq {e.seq}: hash does not match (the row was altered)")
        prev_hash = row["hash"]
        report.last_seq = e.seq
        if len(report.problems) >= max_problems:
            return report
    sums = store.ledger_sums()
    projected = store.balances()
    for member, total in sums.items():
        if total < 0 and (view := shown(member)) < 0:
            report.problems.append(f"member {member}: negative balance {view}")
        if projected.get(member, 0) != total:
            report.problems.append(
                f"member {member}: projected balance {projected.get(member, 0)} != ledger sum {total}"
            )
    if not rebuild_matches(store):
        report.problems.append("projections differ from a rebuild from the ledger")
    return report


def rebuild_matches(store: Store) -> bool:
    """True when rebuilding the projections from the ledger gives the live ones (nothing kept)."""
    live = store.projection_snapshot()
    with store.dry_run():
        store.rebuild_projections()
        rebuilt = store.projection_snapshot()
    return live == rebuilt


def rebuild(store: Store) -> bool:
    """Rebuild the projections from the ledger for good; True when they were already right."""
    live = store.projection_snapshot()
    with store.write():
        store.rebuild_projections()
    return live == store.projection_snapshot()
