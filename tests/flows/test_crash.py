"""`hq flow run` as real processes: SIGKILLed at random moments, and two at once on
PostgreSQL. At the provider fake no message (flow, member, occurrence) ever arrives twice, and
nothing due is silently dropped: every queued row ends sent, failed, or visibly unknown."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tillstamp.hq import store_flows as sf
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.webhooks import apply_whatsapp

from .conftest import ENV, T0, day_of, lapsed_flow, member, put_members, toml_text
from .fakes import wa_status

ROOT = Path(__file__).resolve().parents[2]
D = day_of(dt.date(2026, 3, 2))


def _setup(url: str, fake: Any, tmp: Path, n: int) -> Path:
    store = open_hq_store(url)
    try:
        put_members(store, [member(i, last_day=D - 14) for i in range(n)])
        from tillstamp.hq.messaging import MessagingConfig
        from tillstamp.hq.scheduler import FlowEngine

        FlowEngine(Hq(store), MessagingConfig(), channels={}).set_flows(
            lapsed_flow(channels='["whatsapp"]') + lapsed_flow("second", channels='["whatsapp"]'))
    finally:
        store.close()
    cfg = tmp / "hq.toml"
    cfg.write_text(toml_text(fake).replace('cap = "2/7d"', 'cap = "5/7d"\nlease = "1m"\nbatch = 7\nrecord_every = 3\nconnections = 3'))
    return cfg


def _run(url: str, cfg: Path, now: dt.datetime, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "tillstamp", "hq", "flow", "run", "--db", url, "--config",
                             str(cfg), "--now", now.isoformat(), "--workers", str(workers), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _check(url: str, fake: Any, n: int) -> dict[str, int]:
    refs = fake.refs()
    assert refs and max(refs.values()) == 1, "a message reached the provider twice"
    store = open_hq_store(url)
    try:
        rows = sf.messages(store)
        assert len(rows) == 2 * n  # every due (flow, member) queued exactly once
        states = {r["ref"]: r["state"] for r in rows}
        assert set(states.values()) <= {"sent", "unknown"}, states  # nothing left behind, nothing failed
        assert {r for r, s in states.items() if s == "sent"} <= set(refs)  # "sent" means the provider has it
        assert set(refs) <= set(states)
        # the provider's status callbacks settle every unknown message it did receive
        hq = Hq(store)
        for m in list(fake.received):
            apply_whatsapp(hq, wa_status(m["id"], "sent", ref=m["ref"]))
        after = {r["ref"]: r["state"] for r in sf.messages(store)}
        assert {r for r, s in after.items() if s == "sent"} == set(refs)
        # what stays unknown was committed but never reached the provider: visible, never resent
        return {"sent": len(refs), "unknown": sum(1 for s in after.values() if s == "unknown")}
    finally:
        store.close()


def _kill_loop(url: str, fake: Any, tmp: Path, kills: int, seed: int) -> dict[str, int]:
    n = 30
    cfg = _setup(url, fake, tmp, n)
    fake.delay_s = 0.01
    rng = random.Random(seed)
    now = T0
    for _ in range(kills):
        p = _run(url, cfg, now)
        time.sleep(rng.uniform(0.2, 1.8))
        p.send_signal(signal.SIGKILL)
        p.wait()
        now += dt.timedelta(minutes=2)  # past the killed run's leases
    p = _run(url, cfg, now + dt.timedelta(minutes=2))
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    json.loads(out)
    return _check(url, fake, n)


def test_sigkill_at_random_moments_never_sends_twice_and_drops_nothing(hq_url, fake, tmp_path):
    _kill_loop(hq_url, fake, tmp_path, kills=4, seed=14)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
def test_soak_sigkill_many_times(hq_url, fake, tmp_path, seed):
    _kill_loop(hq_url, fake, tmp_path, kills=40, seed=seed)


def test_two_processes_at_once_on_postgresql(pg_server, fake, tmp_path):
    url = str(pg_server.url())
    open_hq_store(url).close()
    n = 60
    cfg = _setup(url, fake, tmp_path, n)
    procs = [_run(url, cfg, T0, workers=3) for _ in range(2)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o["sent"] for o in outs) == 2 * n
    assert _check(url, fake, n) == {"sent": 2 * n, "unknown": 0}
