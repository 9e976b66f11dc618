"""The POS API under bad input and a bad environment: every answer is JSON with a reason, a
full disk is a 503 `disk_full` and /health says degraded until a write succeeds again; and
one data folder serves one agent."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from agent.kit import make_till, running_agent, sale

from tillstamp.agent.config import ConfigError
from tillstamp.agent.lock import AlreadyRunning
from tillstamp.agent.runtime import AgentOptions, setup

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("body", [
    b'{"receipt": "R\xff", "total": 1, "lines": []}',
    b"[" * 3000 + b"]" * 3000,
    b'{"receipt": "R1", "total": 1, "lines": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"receipt": "R\\ud800", "total": 25000, "lines": [{"sku": "A", "qty": 1, "price": 25000}]}',
])
def test_undecodable_bodies_get_a_json_4xx_and_write_nothing(agent, body: bytes) -> None:
    r = requests.post(agent.url + "/v1/sales", data=body, headers=JSON, timeout=10)
    assert 400 <= r.status_code < 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] in ("invalid_json", "invalid_request") and r.json()["message"]
    assert agent.rt.writer.call(lambda: agent.rt.till.store.last_seq) == 0


def test_unknown_paths_answer_json_too(agent) -> None:
    r = requests.get(agent.url + "/v1/nothing-here", timeout=5)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m"):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_is_a_json_503_and_health_says_so(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        data = make_till(fs / "till", printer="dummy://")
        with running_agent(data) as a:
            assert a.client.record_sale(sale("R1"))["receipt"] == "R1"
            filler = fs / "filler"
            with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
            failed = None
            for n in range(2, 200):  # the WAL has some room left: sales fail once it is used up
                r = requests.post(a.url + "/v1/sales", json=sale(f"R{n}", qty=1), timeout=10)
                if r.status_code != 200:
                    failed = r
                    break
            assert failed is not None and failed.status_code == 503
            assert failed.json()["error"] == "disk_full" and "disk full" in failed.json()["message"]
            health = requests.get(a.url + "/health", timeout=5).json()
            assert health["status"] == "degraded" and health["problem"]["error"] == "disk_full"
            filler.unlink()
            again = requests.post(a.url + "/v1/sales", json=sale("AFTER", qty=1), timeout=10)
            assert again.status_code == 200
            assert requests.get(a.url + "/health", timeout=5).json()["status"] == "ok"


def test_a_database_that_cannot_grow_answers_json_503_anywhere(agent) -> None:
    # SQLite's own full-database condition (SQLITE_FULL), for machines where no tmpfs can be
    # mounted: the same path through the API as a full disk.
    store = agent.rt.till.store
    agent.client.record_sale(sale("R1"))

    def cap() -> None:
        pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
        store.conn.execute(f"PRAGMA max_page_count={pages}")

    agent.rt.writer.call(cap)
    seq = agent.rt.writer.call(lambda: store.last_seq)
    answers = [requests.post(agent.url + "/v1/sales", json=sale(f"F{n}", qty=1), timeout=10)
               for n in range(40)]
    failed = [r for r in answers if r.status_code != 200]
    assert failed and all(r.status_code == 503 and r.json()["error"] == "disk_full" for r in failed)
    assert requests.get(agent.url + "/health", timeout=5).json()["status"] == "degraded"
    ok = sum(r.status_code == 200 for r in answers)
    assert agent.rt.writer.call(lambda: store.last_seq) == seq + ok  # refused ones wrote nothing
    agent.rt.writer.call(lambda: store.conn.execute("PRAGMA max_page_count=1073741823"))
    assert requests.post(agent.url + "/v1/sales", json=sale("AFTER"), timeout=10).status_code == 200
    assert requests.get(agent.url + "/health", timeout=5).json()["status"] == "ok"


def test_a_second_agent_on_one_data_folder_is_refused(till_dir: Path, capsys) -> None:
    with running_agent(till_dir):
        with pytest.raises(AlreadyRunning, match="another agent is already running") as e:
            setup(AgentOptions(data=till_dir))
        assert isinstance(e.value, ConfigError)  # the CLI's exit 2 with one line
        # And from the command line, in another process, as a cashier would start it.
        done = subprocess.run([sys.executable, "-m", "tillstamp", "agent", "run", "--data", str(till_dir),
                               "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 2 and "another agent is already running" in done.stderr
        assert "Traceback" not in done.stderr
    # Once the first one stopped, the folder is free again.
    rt = setup(AgentOptions(data=till_dir))
    rt.shutdown()


def test_an_unexpected_error_is_a_json_500_not_plain_text(agent, monkeypatch) -> None:
    from tillstamp.pos_plugin import ops

    def broken(rt, member=None):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ops, "rewards", broken)
    r = requests.get(agent.url + "/v1/rewards", timeout=5)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "internal" and "a bug" not in r.text  # details stay in the log
