"""The head-office half of `tillstamp demo`: the morning reaches an embedded head office.

The demo's till (which ran alone all morning) enrols with a head office served from this
process over loopback HTTP (SQLite in the output folder), pushes its ledger and pulls; head
office's read model then holds the morning, a segment is previewed on it, and a welcome flow
runs one tick against a stand-in of the WhatsApp Cloud API and the SMS gateway on loopback, so
what the flows would send is shown and nothing leaves the machine.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..agent.enroll import enroll_existing
from ..agent.sync_store import client_for
from ..agent.till import open_till

EXAMPLE_PROGRAM = Path(__file__).resolve().parents[2] / "examples" / "program.toml"

SEGMENT = {"all": [{"visits": {"min": 1, "within_days": 30}}, {"consent": "whatsapp"}]}
SEGMENT_NAME = "pelanggan aktif dengan WhatsApp / active members with WhatsApp"

WELCOME = """
[[flows]]
name = "welcome"
description = "Selamat datang"
trigger = { enrolled = true }
channels = ["whatsapp", "sms"]
once_per = "365d"
holdout = 0.0
[flows.whatsapp]
template = "welcome_member"
params = ["{{ first_name }}", "{{ balance }}"]
[flows.sms]
body = "Kopi Senja: selamat datang, {{ first_name }}! Saldo kamu {{ balance }} stempel. Balas STOP untuk berhenti."
"""


class _Server:
    """An ASGI app served by uvicorn from a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from ..pos_plugin.server import bind

        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="demo-hq", daemon=True)

    def start(self, timeout: float = 15.0) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the demo's head office did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Office:
    """The embedded head office and what it did; `close()` stops it."""

    url: str
    report: dict[str, Any]
    _close: list[Any] = field(default_factory=list)

    def close(self) -> None:
        """Stop the server and the stand-in, close the database."""
        for f in reversed(self._close):
            f()


def head_office(data: Path, out: Path, day: dt.date, zone: dt.tzinfo) -> Office:
    """Enrol the demo till with a head office in `out/hq.db`, sync, segment, run a flow."""
    from ..hq.app import create_app
    from ..hq.crm import Crm
    from ..hq.service import Hq, load_json_or_toml
    from ..hq.store import open_hq_store

    for old in out.glob("hq.db*"):
        old.unlink()
    hq = Hq(open_hq_store(f"sqlite:///{out / 'hq.db'}"))
    office = Office("", {}, [hq.store.close])
    try:
        hq.publish_program(load_json_or_toml(EXAMPLE_PROGRAM.read_text(encoding="utf-8")))
        server = _Server(create_app(hq)).start()
        office._close.append(server.stop)
        office.url = server.url
        code = hq.new_code("JKT-KMG", store_name="Kopi Senja Kemang")
        enroll_existing(data, hq=server.url, code=code)
        with open_till(data) as till:
            assert till.sync is not None
            client = client_for(till.store, till.keys, till.sync, server.url)
            pushed = client.push()
            pulled = client.pull()
        crm = Crm(hq)
        preview = crm.preview(SEGMENT, day + dt.timedelta(days=1))
        report: dict[str, Any] = {
            "hq": server.url, "db": str(out / "hq.db"),
            "pushed": pushed.acked, "pulled": pulled.changes,
            "stats": hq.store.stats(),
            "segment": {"name": SEGMENT_NAME, "definition": SEGMENT, "count": preview.count,
                        "members": [s["name"] for s in preview.sample]},
        }
        report["flows"] = _welcome_flow(hq, server.url, day, zone, office)
        office.report = report
        return office
    except BaseException:
        office.close()
        raise


def _welcome_flow(hq: Any, url: str, day: dt.date, zone: dt.tzinfo, office: Office) -> dict[str, Any]:
    """One tick of a welcome flow; what reached the stand-in provider."""
    from ..hq.channels.standin import (
        PHONE_NUMBER_ID,
        SMS_TOKEN,
        WA_SECRET,
        WA_TOKEN,
        StandInProvider,
    )
    from ..hq.messaging import parse_config
    from ..hq.scheduler import FlowEngine

    provider = StandInProvider()
    office._close.append(provider.close)
    env = {"DEMO_WA_TOKEN": WA_TOKEN, "DEMO_WA_SECRET": WA_SECRET, "DEMO_SMS_TOKEN": SMS_TOKEN}
    config = parse_config({
        "channels": {
            "whatsapp": {"api_base": f"{provider.base}/v23.0", "phone_number_id": PHONE_NUMBER_ID,
                         "token_env": "DEMO_WA_TOKEN", "app_secret_env": "DEMO_WA_SECRET"},
            "sms": {"url": f"{provider.base}/sms/send", "token_env": "DEMO_SMS_TOKEN"},
        },
        "messaging": {"public_url": url, "holdout": 0.0},
    }, env=env)
    engine = FlowEngine(hq, config)
    engine.set_flows(WELCOME, "demo welcome flow")
    # The next morning at ten, store time: outside quiet hours, within a week of enrolment.
    when = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(10, 0), zone)
    result = engine.tick(when).to_json()
    sent = [{"channel": m["channel"], "to": m["to"],
             "text": _text(m["body"]) if m["channel"] == "sms" else
             f"template {m['body']['template']['name']}: " + ", ".join(
                 p["text"] for c in m["body"]["template"].get("components", []) for p in c.get("parameters", []))}
            for m in provider.received]
    return {"tick": result, "sent": sent, "provider": provider.base}


def _text(body: dict[str, Any]) -> str:
    return str(body.get("text", ""))
