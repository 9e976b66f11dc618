"""Crashes and bad clocks: SIGKILL of the pushing agent and of HQ during a backlog push, a till
restored from an old copy of its database (quarantine), a till clock moved a day."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tillstamp.agent.enroll import init_with_hq
from tillstamp.agent.sync_store import client_for
from tillstamp.agent.till import open_till
from tillstamp.hq.app import create_app
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event, new_id
from tillstamp.sync import errors
from tillstamp.sync.transport import RequestsTransport

from .checker import History, check
from .conftest import T0, HqHarness, TillHandle, program_source, sale
from .live import serve

TILLSTAMP = str(Path(sys.executable).parent / "tillstamp")


def _backlog(data: Path, n: int) -> None:
    with open_till(data) as till:
        members = [new_id() for _ in range(10)]
        with till.store.write():
            till.store.append([Event(new_id(), ev.EARNED, T0, members[i % 10], 1, f"r{i}", {"i": i})
                               for i in range(n)], terminal=till.config.terminal, store=till.config.store)


def _push(data: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([TILLSTAMP, "sync", "push", "--data", str(data), "--json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def _exactly_once(hq_url: str, data: Path) -> None:
    store = open_hq_store(hq_url)
    with open_till(data) as till:
        history = History({"a": till.store.events()}, [e for _, e in store.events(0, 10**6)], store.balances(), 0)
        assert check(history) == []
        assert till.sync is not None and till.sync.acked() == till.store.last_seq
    store.close()


def _hq_acked(hq_url: str) -> int:
    store = open_hq_store(hq_url)
    try:
        return max((t.acked for t in store.terminals()), default=0)
    finally:
        store.close()


def test_sigkill_of_the_agent_during_a_backlog_push_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    hq = Hq(open_hq_store(url))
    hq.publish_program(program_source())
    with serve(create_app(hq)) as base:
        data = tmp_path / "till"
        init_with_hq(data, hq=base, code=hq.new_code("S1"))
        _backlog(data, 4000)
        proc = _push(data, "--batch", "25")
        _wait_for(lambda: hq.store.terminals()[0].acked > 0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert hq.store.terminals()[0].acked < 4001
        done = subprocess.run([TILLSTAMP, "sync", "push", "--data", str(data), "--json"], capture_output=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    hq.store.close()
    _exactly_once(url, data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_hq(url: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([TILLSTAMP, "hq", "serve", "--db", url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def up() -> bool:
        try:
            return RequestsTransport(f"http://127.0.0.1:{port}", timeout=1).request("GET", "/v1/time").status == 200
        except errors.SyncError:
            return False

    _wait_for(up)
    return proc


def test_sigkill_of_hq_during_a_backlog_push_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    Hq(open_hq_store(url)).publish_program(program_source())
    code = Hq(open_hq_store(url)).new_code("S1")
    port = _free_port()
    server = _serve_hq(url, port)
    try:
        data = tmp_path / "till"
        init_with_hq(data, hq=f"http://127.0.0.1:{port}", code=code)
        _backlog(data, 4000)
        proc = _push(data, "--batch", "25", "--attempts", "2", "--timeout", "2")
        _wait_for(lambda: _hq_acked(url) > 0)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        assert proc.wait(60) == 1  # offline: reported, nothing lost
        server = _serve_hq(url, port)
        done = subprocess.run([TILLSTAMP, "sync", "push", "--data", str(data), "--json"], capture_output=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    _exactly_once(url, data)


def test_a_till_restored_from_an_old_copy_is_quarantined_not_overwritten(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("R1", m.id))
    a.client.push()
    a.till.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(a.data / "till.db", tmp_path / "backup.db")
    a.service.record_sale(sale("R2", m.id))
    a.client.push()
    before = hq.hq.stats()
    a.close()
    for suffix in ("", "-wal", "-shm"):
        (a.data / f"till.db{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", a.data / "till.db")
    till = open_till(a.data, clock=a.clock)
    client = client_for(till.store, till.keys, till.sync, "http://hq.test", transport=hq.transport,  # type: ignore[arg-type]
                        clock=a.clock, sleep=lambda s: None)
    restored = TillHandle(a.data, till, a.clock, client)
    restored.service.record_sale(sale("R3", m.id, 80000))  # new content at the seqs HQ already holds
    with pytest.raises(errors.Conflict) as e:
        restored.client.push()
    assert e.value.code == "quarantined"
    after = hq.hq.stats()
    assert after["events"] == before["events"] and after["quarantined"] > 0
    assert "quarantine" in [x["kind"] for x in hq.hq.store.alerts()]
    assert till.sync is not None and till.sync.parked()["code"] == "quarantined"  # type: ignore[index]
    till.close()


def test_moving_the_till_clock_a_day_changes_no_dedupe_and_no_order(hq: HqHarness, tmp_path: Path) -> None:
    a = hq.till(tmp_path, "a", "S1")
    m = a.service.enroll("081234567890")
    a.service.record_sale(sale("R1", m.id))
    a.clock.advance(days=1)
    r2_at = a.clock()
    a.service.record_sale(sale("R2", m.id, at=r2_at))
    assert a.service.record_sale(sale("R1", m.id)).duplicate  # the POS retries with the sale's own time
    a.client.push()
    a.clock.advance(days=-2)
    a.service.record_sale(sale("R3", m.id, at=a.clock()))
    assert a.service.record_sale(sale("R2", m.id, at=r2_at)).duplicate
    a.client.push()
    a.client.push()
    mine = [e for _, e in hq.hq.store.events(0, 1000) if e.terminal == a.till.config.terminal]
    assert [e.seq for e in mine] == list(range(1, a.till.store.last_seq + 1))
    assert [e.id for e in mine] == [e.id for e in a.till.store.events()]
    assert len({e.id for e in mine}) == len(mine)
    assert hq.hq.stats()["sales"] == 3
