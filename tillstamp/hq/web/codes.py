"""How a one-time code reaches a customer's phone: the `CodeSender` seam, with a WhatsApp
Business Cloud API sender (a template message whose one parameter is the code) and an SMS
HTTP gateway sender, picked by `[otp]` in `hq.toml` and sent through the channels configured
there (one file, one reader: `messaging.load_config`; see docs/FLOWS.md):

    [channels.whatsapp]                      # the automations' channel, its token from the environment
    api_base = "https://graph.facebook.com/v23.0"
    phone_number_id = "1234567890"
    token_env = "TILLSTAMP_WA_TOKEN"
    app_secret_env = "TILLSTAMP_WA_APP_SECRET"
    [messaging]
    public_url = "https://hq.kopisenja.id"   # the program's [claim] url is this + "/k/"
    [otp]
    channel = "whatsapp"                     # or "sms" (through [channels.sms])
    template = "kode_masuk"                  # an approved template with one body parameter
    language = "id"

Anything with `send_code(phone, code)` is a `CodeSender`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

from ..messaging import ConfigError, MessagingConfig, load_config

TIMEOUT_S = 10.0


class CodeSendError(RuntimeError):
    """The provider did not accept the message."""


class CodeSender(Protocol):
    """Sends a one-time code to a phone number (E.164)."""

    def send_code(self, phone: str, code: str) -> None:
        """Send `code` to `phone`; CodeSendError when the provider refuses."""


@dataclass
class WhatsAppCodeSender:
    """WhatsApp Business Cloud API: POST {api_url}/{phone_number_id}/messages, a template message."""

    api_url: str
    phone_number_id: str
    template: str
    token: str
    language: str = "id"

    def send_code(self, phone: str, code: str) -> None:
        """Send the code as the template's one body parameter."""
        body = {"messaging_product": "whatsapp", "to": phone.lstrip("+"), "type": "template",
                "template": {"name": self.template, "language": {"code": self.language},
                             "components": [{"type": "body", "parameters": [{"type": "text", "text": code}]}]}}
        _post(f"{self.api_url.rstrip('/')}/{self.phone_number_id}/messages", body, self.token)


@dataclass
class SmsCodeSender:
    """An SMS HTTP gateway (the shape of docs/FLOWS.md): POST {url} with {"to", "text"} (and
    "from" when a sender name is set) and a bearer token."""

    url: str
    sender: str | None
    token: str

    def send_code(self, phone: str, code: str) -> None:
        """Send the code in a short Indonesian text."""
        text = f"Kode masuk kamu: {code}. Berlaku 10 menit. Jangan berikan kode ini ke siapa pun."
        body = {"to": phone, "text": text}
        if self.sender:
            body["from"] = self.sender
        _post(self.url, body, self.token)


@dataclass
class MemoryCodeSender:
    """Keeps codes in a list (the demo, and a server run without a channel configured)."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send_code(self, phone: str, code: str) -> None:
        """Remember the code."""
        self.sent.append((phone, code))


def _post(url: str, body: dict[str, Any], token: str) -> None:
    try:
        r = requests.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)
    except requests.RequestException as e:
        raise CodeSendError(f"{url}: {type(e).__name__}") from None
    if r.status_code >= 300:
        raise CodeSendError(f"{url}: HTTP {r.status_code}")


@dataclass(frozen=True)
class WebConfig:
    """The web pages' settings: HQ's public address, whether it is behind https, the code sender."""

    public_url: str = "http://127.0.0.1:8700"
    sender: CodeSender = field(default_factory=MemoryCodeSender)

    @property
    def secure(self) -> bool:
        """Cookies get `Secure` when HQ is reached over https."""
        return self.public_url.startswith("https://")


def web_config(config: MessagingConfig | None) -> WebConfig:
    """The web settings from hq.toml's checked config (defaults without one)."""
    if config is None:
        return WebConfig()
    sender: CodeSender = MemoryCodeSender()
    otp = config.otp
    if otp is not None and otp.channel == "whatsapp" and config.whatsapp is not None and otp.template:
        wa = config.whatsapp
        sender = WhatsAppCodeSender(wa.api_base, wa.phone_number_id, otp.template, wa.token, otp.language)
    elif otp is not None and otp.channel == "sms" and config.sms is not None:
        sender = SmsCodeSender(config.sms.url, otp.sender, config.sms.token)
    return WebConfig(config.public_url, sender)


def load_web_config(path: str | Path | None, env: dict[str, str] | None = None) -> WebConfig:
    """The web settings from `hq.toml` (defaults without a file); ConfigError names what is wrong."""
    return web_config(None if path is None else load_config(str(path), env))


__all__ = ["CodeSendError", "CodeSender", "ConfigError", "MemoryCodeSender", "SmsCodeSender", "WebConfig",
           "WhatsAppCodeSender", "load_web_config", "web_config"]
