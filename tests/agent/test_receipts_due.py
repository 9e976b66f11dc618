"""A sale's receipt is rendered and spooled after the answer; the sale's own commit lists it as
due, so a crash in between loses no receipt: the next start prints it."""

from __future__ import annotations

import json
from pathlib import Path

from agent.kit import make_till, running_agent, sale, wait_for
from tillstamp.agent.runtime import RECEIPTS_DUE, AgentOptions, setup
from tillstamp.agent.till import open_till
from tillstamp.drivers.escpos_decode import decode
from tillstamp.pos_plugin import ops


def _printed(data: Path) -> list[str]:
    raw = data / "receipts.bin"
    text = decode(raw.read_bytes()).text if raw.exists() else []
    return [t.split()[1] for t in text if t.startswith("No ")]


def _due(data: Path) -> list[list]:
    with open_till(data) as till:
        return json.loads(till.store.get_meta(RECEIPTS_DUE) or "[]")


def test_a_receipt_due_when_the_agent_died_prints_at_the_next_start(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    rt = setup(AgentOptions(data=data))
    # The state a kill leaves between the commit and the spool: recorded, answered, not spooled.
    done = rt.writer.call(ops.record_sale, rt, sale("D1"))
    assert not done.out["duplicate"] and rt.receipts.due() == [(done.result.seq, done.result.key)]
    # No shutdown(): nothing gets to say the receipt was spooled. The kernel drops a killed
    # process's folder lock; here the lock is let go by hand.
    for part in (rt.print_queue.close, rt.receipts.stop, rt.writer.stop, rt.till.close,
                 rt.folder_lock.release):
        part()
    assert _due(data) == [[done.result.seq, done.result.key]]
    assert _printed(data) == []

    with running_agent(data) as agent:
        assert agent.rt.flush_prints(10)
        assert _printed(data) == ["D1"]
    assert _due(data) == []
    with running_agent(data) as agent:  # a clean stop left nothing due: no second copy
        assert agent.rt.flush_prints(10)
    assert _printed(data) == ["D1"]


def test_the_due_list_empties_when_the_spooler_goes_idle(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    with running_agent(data) as agent:
        agent.client.record_sale(sale("I1"))
        assert agent.rt.flush_prints(10)
        store = agent.rt.till.store
        wait_for(lambda: agent.rt.writer.call(store.get_meta, RECEIPTS_DUE) == "[]", timeout=10,
                 what="the idle spooler storing an empty due list")
        assert _printed(data) == ["I1"]


def test_flush_waits_for_a_receipt_promised_but_not_yet_built(tmp_path: Path) -> None:
    from tillstamp.agent.receipts import ReceiptSpooler
    from tillstamp.drivers.spool import PrintQueue

    queue = PrintQueue(tmp_path / "spool", "dummy://")
    spooler = ReceiptSpooler(queue).start()
    try:
        spooler.expect(7, "S/R-7")  # committed, its receipt not handed over yet
        assert not spooler.flush(0.2)
        spooler.forget(7)
        assert spooler.flush(1)
    finally:
        spooler.stop()
        queue.close()
