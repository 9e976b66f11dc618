"""Several tills and HQ under random drops, duplicates, reorders and crashes; the history
checker must find nothing once everything has synced."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tillstamp.agent.service import Refused
from tillstamp.agent.sync_store import client_for
from tillstamp.agent.till import open_till
from tillstamp.sync import errors
from tillstamp.sync.client import RetryPolicy

from .chaos import DELIVER, DROP_REPLY, DROP_REQUEST, DUPLICATE, REPLAY_OLD, Chaos
from .checker import History, check
from .conftest import Clock, HqHarness, sale

FAULTS = st.lists(st.sampled_from([DELIVER, DROP_REQUEST, DROP_REPLY, DUPLICATE, REPLAY_OLD]), max_size=4)
TILLS = 3
CAP = 20


class SyncMachine(RuleBasedStateMachine):
    """Tills selling, redeeming, syncing through a faulty network, crashing; HQ crashing too."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="ts-stateful-"))
        self.clock = Clock()
        self.hq_url = f"sqlite:///{self.root / 'hq.db'}"
        self.hq = HqHarness(self.hq_url, self.clock)
        self.hq.publish(max_per_member=CAP, max_per_terminal=200)
        self.faults: list[str] = []
        self.names = [f"t{i}" for i in range(TILLS)]
        for i, name in enumerate(self.names):
            self.hq.till(self.root, name, f"S{i % 2}")
        self.cursors: dict[str, list[int]] = {}
        first = self.hq.tills[0]
        self.members = [first.service.enroll(f"08123456780{i}").id for i in range(2)]
        for n in range(6):  # stamps to spend, so stale views can overspend
            for m in self.members:
                first.service.record_sale(sale(f"seed-{n}-{m}", m, 125000, self.clock()))
        self._rewire()
        for t in self.hq.tills:
            t.client.push()
        for t in self.hq.tills:
            t.client.pull()
        self.receipts = 0

    def _rewire(self) -> None:
        for h in self.hq.tills:
            h.clock = self.clock
            h.till.service.clock = self.clock
            chaos = Chaos(self.hq.transport, lambda: self.faults.pop(0) if self.faults else DELIVER)
            assert h.till.sync is not None
            h.till.sync.clock = self.clock
            h.client = client_for(h.till.store, h.till.keys, h.till.sync, "http://hq.test", transport=chaos,
                                  clock=self.clock, sleep=lambda s: None, policy=RetryPolicy(attempts=2),
                                  max_events=7)

    @rule(i=st.integers(0, TILLS - 1), m=st.integers(0, 1), total=st.sampled_from([20000, 50000, 125000]))
    def sell(self, i: int, m: int, total: int) -> None:
        self.receipts += 1
        self.hq.tills[i].service.record_sale(sale(f"R{self.receipts}", self.members[m], total, self.clock()))

    @rule(i=st.integers(0, TILLS - 1), m=st.integers(0, 1), reward=st.sampled_from(["kopi-gratis", "pastry-gratis"]))
    def redeem(self, i: int, m: int, reward: str) -> None:
        try:
            self.hq.tills[i].service.redeem(self.members[m], reward)
        except Refused:
            pass  # refused by the balance or a rule-7 cap: exactly what the caps are for

    @rule(i=st.integers(0, TILLS - 1), faults=FAULTS)
    def push(self, i: int, faults: list[str]) -> None:
        self.faults = list(faults)
        try:
            self.hq.tills[i].client.push()
        except errors.Retryable:
            pass  # the outbox keeps everything for the next round

    @rule(i=st.integers(0, TILLS - 1), faults=FAULTS)
    def pull(self, i: int, faults: list[str]) -> None:
        self.faults = list(faults)
        try:
            self.hq.tills[i].client.pull()
        except errors.Retryable:
            pass

    @rule(i=st.integers(0, TILLS - 1))
    def crash_till(self, i: int) -> None:
        h = self.hq.tills[i]
        h.till.close()
        h.till = open_till(h.data, clock=self.clock)
        self._rewire()

    @precondition(lambda self: True)
    @rule()
    def crash_hq(self) -> None:
        self.hq.transport.close()
        self.hq.hq.store.close()
        fresh = HqHarness(self.hq_url, self.clock)
        fresh.tills = self.hq.tills
        self.hq = fresh
        self._rewire()

    @rule(minutes=st.integers(1, 60 * 30))
    def tick(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @invariant()
    def cursors_never_go_back(self) -> None:
        for h in self.hq.tills:
            sync = h.till.sync
            assert sync is not None
            for name, value in ((f"{sync.terminal}.acked", sync.acked()), (f"{sync.terminal}.pull", sync.pull_cursor())):
                seen = self.cursors.setdefault(name, [])
                assert not seen or value >= seen[-1], f"{name} went back"
                seen.append(value)
            assert sync.parked() is None, sync.parked()

    def teardown(self) -> None:
        try:
            self.faults = []
            for h in self.hq.tills:
                h.client.push()
            for h in self.hq.tills:
                h.client.pull()
            hq_events = [e for _, e in self.hq.hq.store.events(0, 100000)]
            history = History(
                tills={h.till.config.terminal: h.till.store.events() for h in self.hq.tills},
                hq_events=hq_events,
                hq_balances=self.hq.hq.store.balances(),
                overdraft_bound=(TILLS - 1) * CAP,
                cursors=self.cursors,
            )
            problems = check(history)
            assert problems == [], problems
            for m in self.members:
                at_hq = self.hq.hq.store.balances().get(m, 0)
                for h in self.hq.tills:
                    assert h.service.view(m).balance == at_hq
        finally:
            self.hq.close()
            shutil.rmtree(self.root, ignore_errors=True)


SyncMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestSyncMachine = SyncMachine.TestCase
