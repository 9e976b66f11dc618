"""A till that once committed an event head office refuses is not stuck behind it: HQ keeps
that one event aside (quarantine + alert) and takes the rest; the till's sequence moves on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tillstamp.agent.store import Store
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, canonical, content_hash, new_id

from .conftest import T0, Clock, HqHarness, sale

ROOT = Path(__file__).resolve().parents[2]


def smuggle(store: Store, event: Event, *, terminal: str, store_id: str) -> None:
    """Write an event straight into a till's ledger, past every check (an older till, a hand edit)."""
    with store.write():
        e = event.with_position(seq=store.last_seq + 1, terminal=terminal, store=store_id)
        h = content_hash(e, store._hash)
        store.conn.execute(
            "INSERT INTO ledger(seq, id, kind, member, at, stamps, ref, body, terminal, store, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.seq, e.id, e.kind, e.member, e.to_wire()["at"], e.stamps, e.ref, canonical(e.body).decode(),
             terminal, store_id, h))


def test_a_refused_event_is_quarantined_at_hq_and_the_till_syncs_on(hq_any: HqHarness, tmp_path: Path) -> None:
    a = hq_any.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("A1", m.id, 100000))  # 5 stamps
    cfg = a.till.config
    # What an older till let through: a NUL in a receipt number, and a sale earning a million.
    bad_sale = Event(new_id(), ev.SALE, T0, None, 0, "S1/R\x00X",
                     {"receipt": "R\x00X", "total": 1, "digest": "x", "lines": [], "zone": "Asia/Jakarta"})
    smuggle(a.till.store, bad_sale, terminal=cfg.terminal, store_id=cfg.store)
    smuggle(a.till.store, Event(new_id(), ev.EARNED, T0, m.id, 1_000_001, "S1/R2", {}),
            terminal=cfg.terminal, store_id=cfg.store)
    n = a.till.store.count_events()
    bad = [n - 1, n]
    a.service.record_sale(sale("A2", m.id, 100000))  # 5 more, after them
    last = a.till.store.last_seq

    report = a.client.push()
    assert report.acked == last and a.till.sync is not None and a.till.sync.parked() is None
    held = hq_any.hq.store
    taken = sum(e.stamps for e in a.till.store.member_events(m.id) if e.stamps < 1_000_000)
    assert held.balances()[m.id] == taken >= 10  # everything else was taken
    assert sorted(q["seq"] for q in held.quarantine()) == bad
    reasons = [a_["detail"]["reason"] for a_ in held.alerts() if a_["kind"] == "refused_event"]
    assert any("U+0000" in r for r in reasons) and any("stamps" in r for r in reasons)
    assert held.terminal(cfg.terminal).quarantined is False  # type: ignore[union-attr]
    a.service.record_sale(sale("A3", m.id, 100000))
    assert a.client.push().acked == a.till.store.last_seq > last  # and it keeps syncing
    a.client.pull()
    assert a.service.view(m.id).balance == held.balances()[m.id] > taken  # the million is not counted


def test_refused_events_show_in_hq_alerts(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    h = HqHarness(db, Clock())
    h.publish()
    a = h.till(tmp_path, "a", "S1")
    cfg = a.till.config
    smuggle(a.till.store, Event(new_id(), ev.ADJUSTED, T0, "M1", 3, "a\x1bb", {}), terminal=cfg.terminal,
            store_id=cfg.store)
    assert a.client.push().acked == 1
    h.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "tillstamp", "hq", "alerts", "--db", db, "--json"],
                         capture_output=True, text=True, env=env, check=True)
    [alert] = json.loads(out.stdout)
    assert alert["kind"] == "refused_event" and "U+001B" in alert["detail"]["reason"]


def test_a_member_row_hq_cannot_take_does_not_stop_the_till(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890", name="Ani")
    # What an older till let through: a control character in a name (PII sits beside the ledger).
    with a.till.store.write():
        a.till.store.conn.execute("UPDATE members SET name = ? WHERE id = ?", ("Ani\x00", m.id))
    a.service.record_sale(sale("A1", m.id, 100000))
    assert a.client.push().acked == a.till.store.last_seq
    assert a.till.sync is not None and a.till.sync.parked() is None
    assert hq.hq.store.balances()[m.id] > 0
    [alert] = [x for x in hq.hq.store.alerts() if x["kind"] == "refused_member_row"]
    assert alert["member"] == m.id and "U+0000" in alert["detail"]["reason"]
