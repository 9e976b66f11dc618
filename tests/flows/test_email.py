"""Email over a real SMTP server on loopback (aiosmtpd) with STARTTLS and AUTH: the message
carries RFC 8058 one-click unsubscribe headers to a signed HQ URL that withdraws consent on POST."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sync.live import serve

from tillstamp.hq import store_flows as sf
from tillstamp.hq.app import create_app

from .conftest import config_for, day_of, lapsed_flow, member, put_members

D = day_of(dt.date(2026, 3, 2))


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted for delivery"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"kopi" and data.password == b"rahasia"
    return AuthResult(success=ok)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True,
                     authenticator=_auth, auth_required=True, auth_require_tls=True)
    ctl.start()
    yield inbox, port, cert
    ctl.stop()


def email_block(port: int, cert: Path, password_env: str = "TS_SMTP_PASS") -> str:
    return f"""[channels.email]
smtp = "smtp://127.0.0.1:{port}"
starttls = true
ca_file = "{cert}"
from = "Kopi Senja <halo@kopisenja.id>"
user_env = "TS_SMTP_USER"
password_env = "{password_env}"
"""


def test_email_goes_over_starttls_with_one_click_unsubscribe_that_works(hq_url, fake, make_engine, smtp):
    inbox, port, cert = smtp
    eng = make_engine(hq_url, config=config_for(fake, email=email_block(port, cert)))
    put_members(eng.store, [member(1, last_day=D - 14, consent_whatsapp=0)])
    eng.set_flows(lapsed_flow())
    r = eng.tick()
    assert r.sent == 1 and len(inbox.messages) == 1
    rcpt, raw = inbox.messages[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    row = sf.messages(eng.store)[0]
    assert rcpt == ["m1@example.id"] and row["channel"] == "email"
    assert msg["Subject"] == "Kangen, Budi 1!" and msg["Message-ID"] == f"<{row['ref']}@kopisenja.id>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = str(msg["List-Unsubscribe"]).strip("<>")
    assert url.startswith("https://hq.kopisenja.id/v1/unsubscribe/") and url in msg.get_content()
    # the link, posted as a mail client does it, withdraws email consent at HQ
    app = create_app(eng.hq)
    app.state.messaging = eng.config
    with serve(app) as base:
        got = requests.post(base + url.removeprefix("https://hq.kopisenja.id"),
                            data="List-Unsubscribe=One-Click", timeout=5,
                            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    assert got.json() == {"ok": True, "member": "M00001", "channel": "email", "consent": False}
    from tillstamp.hq import crm_store

    assert crm_store.member_row(eng.store, "M00001", None)["consent_email"] == 0


def test_a_refused_recipient_fails_the_message_and_nothing_is_delivered(hq_url, fake, make_engine, smtp):
    inbox, port, cert = smtp
    inbox.refuse = {"m1@example.id"}
    eng = make_engine(hq_url, config=config_for(fake, email=email_block(port, cert)))
    put_members(eng.store, [member(1, last_day=D - 14, consent_whatsapp=0, consent_sms=0),
                            member(2, last_day=D - 14, consent_whatsapp=0, consent_sms=0)])
    eng.set_flows(lapsed_flow())
    r = eng.tick()
    assert r.failed == 1 and r.sent == 1 and [m[0] for m in inbox.messages] == [["m2@example.id"]]
    rows = {x["member"]: x for x in sf.messages(eng.store)}
    assert rows["M00001"]["state"] == "failed" and "550" in rows["M00001"]["error"]
