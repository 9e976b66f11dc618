"""How a one-time code reaches a customer's phone: the `CodeSender` seam, with a WhatsApp
Business Cloud API sender (a template message whose one parameter is the code) and an SMS
HTTP gateway sender; and the web section of `hq.toml` that picks one.

    [web]
    public_url = "https://hq.kopisenja.id"   # the program's [claim] url is this + "/k/"

    [otp]
    channel = "whatsapp"                     # or "sms"

    [whatsapp]
    api_url = "https://graph.facebook.com/v21.0"
    phone_number_id = "1234567890"
    otp_template = "kode_masuk"              # an approved template with one body parameter
    language = "id"
    token_env = "WHATSAPP_TOKEN"             # secrets come from the environment

    [sms]
    url = "https://sms.example.id/v1/messages"
    sender = "KOPISENJA"
    token_env = "SMS_TOKEN"

The automations' channel classes can stand behind the same seam: anything with
`send_code(phone, code)` is a `CodeSender`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

TIMEOUT_S = 10.0


class CodeSendError(RuntimeError):
    """The provider did not accept the message."""


class ConfigError(ValueError):
    """An `hq.toml` that cannot be used."""


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
    """An SMS HTTP gateway: POST {url} with {"to", "from", "text"} and a bearer token."""

    url: str
    sender: str
    token: str

    def send_code(self, phone: str, code: str) -> None:
        """Send the code in a short Indonesian text."""
        text = f"Kode masuk kamu: {code}. Berlaku 10 menit. Jangan berikan kode ini ke siapa pun."
        _post(self.url, {"to": phone, "from": self.sender, "text": text}, self.token)


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


def _secret(section: dict[str, Any], name: str, env: dict[str, str]) -> str:
    var = section.get("token_env")
    if not isinstance(var, str) or not var:
        raise ConfigError(f"[{name}] token_env: name the environment variable holding the token")
    value = env.get(var)
    if not value:
        raise ConfigError(f"[{name}] token_env: environment variable {var} is not set")
    return value


def _text(section: dict[str, Any], where: str, key: str) -> str:
    v = section.get(key)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"[{where}] {key}: expected text")
    return v


def load_web_config(path: str | Path | None, env: dict[str, str] | None = None) -> WebConfig:
    """The web settings from `hq.toml` (defaults without a file); ConfigError names what is wrong."""
    if path is None:
        return WebConfig()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: {e}") from None
    env = dict(os.environ) if env is None else env
    web = raw.get("web", {})
    public = web.get("public_url", WebConfig.public_url)
    if not isinstance(public, str) or not public.startswith(("http://", "https://")):
        raise ConfigError(f"{p}: [web] public_url: expected http://... or https://...")
    channel = raw.get("otp", {}).get("channel")
    sender: CodeSender
    if channel is None:
        sender = MemoryCodeSender()
    elif channel == "whatsapp":
        s = raw.get("whatsapp", {})
        sender = WhatsAppCodeSender(_text(s, "whatsapp", "api_url"), _text(s, "whatsapp", "phone_number_id"),
                                    _text(s, "whatsapp", "otp_template"), _secret(s, "whatsapp", env),
                                    s.get("language", "id"))
    elif channel == "sms":
        s = raw.get("sms", {})
        sender = SmsCodeSender(_text(s, "sms", "url"), _text(s, "sms", "sender"), _secret(s, "sms", env))
    else:
        raise ConfigError(f"{p}: [otp] channel: expected 'whatsapp' or 'sms', got {channel!r}")
    return WebConfig(public.rstrip("/"), sender)
