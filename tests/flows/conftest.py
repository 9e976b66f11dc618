"""Fixtures for flow tests: HQ on SQLite and PostgreSQL, a settable clock, the provider fake,
hq.toml and members written into the read model."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tillstamp.hq.messaging import MessagingConfig, parse_config
from tillstamp.hq.scheduler import FlowEngine
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store

from .fakes import (
    PHONE_NUMBER_ID,
    SMS_SECRET,
    SMS_TOKEN,
    WA_SECRET,
    WA_TOKEN,
    WA_VERIFY,
    FakeProvider,
)

ENV = {"TS_WA_TOKEN": WA_TOKEN, "TS_WA_SECRET": WA_SECRET, "TS_WA_VERIFY": WA_VERIFY, "TS_SMS_TOKEN": SMS_TOKEN,
       "TS_SMS_SECRET": SMS_SECRET, "TS_UNSUB": "unsub-secret", "TS_SMTP_USER": "kopi", "TS_SMTP_PASS": "rahasia"}
# 10:00 in Jakarta (WIB), 12:00 in Jayapura (WIT), on Monday 2 March 2026
T0 = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hq.db'}"
    else:
        url = str(request.getfixturevalue("pg_server").url())
    open_hq_store(url).close()
    return url


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    f = FakeProvider()
    yield f
    f.close()


def toml_text(fake: FakeProvider, *, extra: str = "", email: str = "") -> str:
    return f"""
[channels.whatsapp]
api_base = "{fake.base}/v23.0"
phone_number_id = "{PHONE_NUMBER_ID}"
token_env = "TS_WA_TOKEN"
app_secret_env = "TS_WA_SECRET"
verify_token_env = "TS_WA_VERIFY"
timeout_s = 1.0
[channels.sms]
url = "{fake.base}/sms/send"
token_env = "TS_SMS_TOKEN"
webhook_secret_env = "TS_SMS_SECRET"
timeout_s = 1.0
{email}
[messaging]
quiet_hours = "21:00-08:00"
cap = "2/7d"
public_url = "https://hq.kopisenja.id"
unsubscribe_secret_env = "TS_UNSUB"
[zones]
JAY1 = "Asia/Jayapura"
MKS1 = "Asia/Makassar"
{extra}
"""


def config_for(fake: FakeProvider, **kw: str) -> MessagingConfig:
    import tomllib

    return parse_config(tomllib.loads(toml_text(fake, **kw)), ENV)


class Clock:
    def __init__(self, now: dt.datetime = T0):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


MEMBER_DEFAULTS: dict[str, Any] = {"phone": None, "name": None, "email": None, "birthday": None, "store": "S1",
                                   "enrolled_day": None, "consent_whatsapp": 1, "consent_email": 1, "consent_sms": 1,
                                   "balance": 0, "tier": None, "last_day": None, "first_day": None, "visits": 0}


def put_members(store: Any, members: list[dict[str, Any]]) -> None:
    """Write members straight into the read model (crm_members)."""
    cols = ("member", *MEMBER_DEFAULTS)
    rows = [tuple({**MEMBER_DEFAULTS, **m}[c] for c in cols) for m in members]
    with store._tx() as c:
        store._many(c, f"INSERT INTO crm_members({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


def member(i: int, **kw: Any) -> dict[str, Any]:
    return {"member": f"M{i:05d}", "phone": f"+62812{i:07d}", "name": f"Budi {i}", "email": f"m{i}@example.id",
            **kw}


def day_of(d: dt.date) -> int:
    return (d - dt.date(1970, 1, 1)).days


def lapsed_flow(name: str = "winback-14", *, holdout: float = 0.0, channels: str = '["whatsapp", "email"]',
                extra: str = "") -> str:
    return f"""
[[flows]]
name = "{name}"
trigger = {{ lapsed_days = 14 }}
channels = {channels}
once_per = "30d"
holdout = {holdout}
{extra}
[flows.whatsapp]
template = "winback_14d"
language = "id"
params = ["{{{{ name }}}}", "{{{{ balance }}}}"]
[flows.email]
subject = "Kangen, {{{{ name }}}}!"
body = "Sudah lama tidak mampir. Saldo kamu {{{{ balance }}}} stempel. {{{{ unsubscribe_url }}}}"
[flows.sms]
body = "Kopi Senja: saldo {{{{ balance }}}} stempel. Balas STOP untuk berhenti."
"""


@pytest.fixture
def make_engine(fake: FakeProvider) -> Iterator[Any]:
    made: list[FlowEngine] = []

    def build(url: str, clock: Clock | None = None, config: MessagingConfig | None = None,
              **kw: Any) -> FlowEngine:
        hq = Hq(open_hq_store(url), clock=clock or Clock())
        eng = FlowEngine(hq, config or config_for(fake), sleep=lambda s: None, **kw)
        made.append(eng)
        return eng

    yield build
    for e in made:
        e.close()
        e.hq.store.close()


def dumps(x: Any) -> str:
    return json.dumps(x, sort_keys=True)
