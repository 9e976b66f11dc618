"""The flow commands: set (refusals name the key path, write nothing), list, pause, resume,
run (the tick's JSON), messages and the holdout report."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from tillstamp.cli import main
from tillstamp.hq.flow_report import Group, compare
from tillstamp.hq.store import open_hq_store

from .conftest import ENV, day_of, lapsed_flow, member, put_members, toml_text

ROOT = Path(__file__).resolve().parents[2]
D = day_of(dt.date(2026, 3, 2))


def cli(capsys: Any, *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        data = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        data = out
    return code, data, err


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    open_hq_store(url).close()
    return url


def test_a_bad_flows_file_is_one_line_and_writes_nothing(db, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(lapsed_flow().replace("lapsed_days = 14", "lapsed_days = -1"))
    code, _, err = cli(capsys, "hq", "flow", "set", str(bad), "--db", db)
    assert code == 2 and err.startswith("tillstamp: flows[0].trigger.lapsed_days") and len(err.splitlines()) == 1
    assert cli(capsys, "hq", "flow", "list", "--db", db, "--json")[1] == []


def test_set_list_pause_run_resume_messages_and_report(db, capsys, tmp_path, fake):
    code, data, _ = cli(capsys, "hq", "flow", "set", str(ROOT / "examples" / "flows.toml"), "--db", db, "--json")
    assert code == 0 and data == {"flows": ["winback-14", "birthday", "card-almost-full"]}
    store = open_hq_store(db)
    put_members(store, [member(i, last_day=D - 14) for i in range(80)])
    store.close()
    cfg = tmp_path / "hq.toml"
    cfg.write_text(toml_text(fake))
    now = "2026-03-02T10:00:00+07:00"
    assert cli(capsys, "hq", "flow", "pause", "winback-14", "--db", db)[0] == 0
    listed = {f["name"]: f["paused"] for f in cli(capsys, "hq", "flow", "list", "--db", db, "--json")[1]}
    assert listed == {"winback-14": True, "birthday": False, "card-almost-full": False}
    code, tick, _ = cli(capsys, "hq", "flow", "run", "--db", db, "--config", str(cfg), "--now", now, "--json")
    assert code == 0 and tick["due"] == 0
    assert set(tick) >= {"due", "sent", "held_out", "skipped", "failed"}
    assert set(tick["skipped"]) >= {"no_consent", "quiet_hours", "capped"}
    cli(capsys, "hq", "flow", "resume", "winback-14", "--db", db)
    code, tick, _ = cli(capsys, "hq", "flow", "run", "--db", db, "--config", str(cfg), "--now", now, "--json")
    assert tick["due"] == 80 and tick["sent"] + tick["held_out"] == 80 and tick["held_out"] > 5
    assert len(fake.received) == tick["sent"]
    code, msgs, _ = cli(capsys, "hq", "messages", "--member", "M00001", "--db", db, "--json")
    assert code == 0 and [m["flow"] for m in msgs] == ["winback-14"] and msgs[0]["state"] in ("sent", "held_out")
    shown = cli(capsys, "hq", "flow", "show", "winback-14", "--db", db, "--json")[1]
    assert shown["messages"] == {"sent": tick["sent"], "held_out": tick["held_out"]}

    # visits after the trigger: every treated member with an even number, held-out ones never
    from tillstamp.hq import store_flows as sf

    store = open_hq_store(db)
    rows = sf.messages(store, "winback-14")
    lines = []
    for r in rows:
        n = int(r["member"][1:])
        if r["state"] == "sent" and n % 2 == 0:
            lines.append((f"S{n}", 0, r["member"], "S1", "S1-T1", f"R{n}", "2026-03-05T03:00:00+00:00", "2026-03-05",
                          D + 3, 10, 3, "KOPI", "Kopi", "coffee", 1, 25000, 0))
    with store._tx() as c:
        store._many(c, f"INSERT INTO sale_lines VALUES ({', '.join('?' * 17)})", lines)
    store.close()
    code, rep, _ = cli(capsys, "hq", "flow", "report", "winback-14", "--db", db, "--json")
    treated, held = rep["treated"], rep["held_out"]
    assert treated["members"] == tick["sent"] and held["members"] == tick["held_out"]
    assert treated["visited"] == len(lines) and held["visited"] == 0 and treated["spend"] == 25000 * len(lines)
    lo, hi = rep["difference"]["visit_share"]["ci95"]
    assert lo < rep["difference"]["visit_share"]["difference"] < hi and lo > 0
    assert cli(capsys, "hq", "flow", "report", "nope", "--db", db)[0] == 2


def test_the_interval_is_the_normal_approximation():
    t, h = Group(100, 50, 0, 0), Group(100, 30, 0, 0)
    d = compare(t, h)["visit_share"]
    se = (0.5 * 0.5 / 100 + 0.3 * 0.7 / 100) ** 0.5
    assert d["difference"] == 0.2 and d["ci95"] == [round(0.2 - 1.959964 * se, 4), round(0.2 + 1.959964 * se, 4)]
    assert compare(t, Group(0, 0, 0, 0))["visit_share"] is None


def test_serve_with_config_runs_the_scheduler_and_mounts_the_webhooks(tmp_path, fake, monkeypatch):
    import time

    import requests
    from sync.live import serve

    from tillstamp.cli.hq_flows import start_scheduler
    from tillstamp.hq.app import create_app
    from tillstamp.hq.scheduler import FlowEngine
    from tillstamp.hq.service import Hq

    from .conftest import Clock
    from .fakes import WA_VERIFY

    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "hq.toml"
    cfg.write_text(toml_text(fake))
    hq = Hq(open_hq_store(f"sqlite:///{tmp_path / 'hq.db'}"), clock=Clock())
    put_members(hq.store, [member(1, last_day=D - 14)])
    FlowEngine(hq, __import__("tillstamp.hq.messaging", fromlist=["x"]).MessagingConfig(), channels={}).set_flows(
        lapsed_flow(holdout=0.0))
    app = create_app(hq)
    loop = start_scheduler(app, hq, str(cfg), 0.05)
    try:
        for _ in range(400):
            if fake.received:
                break
            time.sleep(0.05)
        with serve(app) as base:
            r = requests.get(f"{base}/v1/webhooks/whatsapp", params={"hub.mode": "subscribe", "hub.challenge": "42",
                                                                      "hub.verify_token": WA_VERIFY}, timeout=5)
    finally:
        loop.stop()
        hq.store.close()
    assert [m["to"] for m in fake.received] == ["628120000001"] and loop.errors == 0
    assert r.text == "42"
