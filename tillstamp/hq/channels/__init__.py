"""Channels: one small interface over real protocols (WhatsApp Business Cloud API, SMTP, an SMS
HTTP gateway). A channel sends one message and says how it went, in three kinds of error:

- `NotSent`: the provider said, or the transport proves, that nothing went out (connection
  refused, 429, an SMTP 4xx before the end of DATA). Safe to retry; only these are retried.
- `Rejected`: nothing went out and trying again will not help (a 4xx; WhatsApp 131050 means
  the user stopped marketing messages). The message is `failed`.
- `MaybeSent`: the request left and no clear answer came back (a read timeout, a reset, a
  5xx). The message is `unknown`, settled by the provider's status webhook, never resent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential


class ChannelError(Exception):
    """A send that did not succeed."""

    def __init__(self, message: str, code: int | str | None = None):
        super().__init__(message)
        self.code = code


class NotSent(ChannelError):
    """Nothing went out; trying again is safe."""


class Rejected(ChannelError):
    """Nothing went out and the provider refused it for good."""


class MaybeSent(ChannelError):
    """The request may have gone out: the outcome is unknown."""


@dataclass(frozen=True)
class Outgoing:
    """One message ready to leave: the idempotency `ref`, the address and the rendered content."""

    ref: str
    member: str
    to: str
    language: str = "id"
    template: str | None = None  # WhatsApp
    params: tuple[str, ...] = ()
    subject: str | None = None  # email
    body: str = ""
    unsubscribe_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SendResult:
    """What the provider said: its id for the message."""

    provider_id: str


class Channel(Protocol):
    """What the sender needs from a channel."""

    name: str

    def send(self, msg: Outgoing) -> SendResult: ...
    def close(self) -> None: ...


def retry_not_sent(attempts: int = 3, sleep: Callable[[float], None] | None = None) -> Retrying:
    """The one retry policy of the sender: only `NotSent`, a few times, exponential with jitter."""
    kw: dict[str, Any] = {} if sleep is None else {"sleep": sleep}
    return Retrying(retry=retry_if_exception_type(NotSent), stop=stop_after_attempt(attempts),
                    wait=wait_random_exponential(multiplier=0.2, max=5), reraise=True, **kw)


def open_channels(config: Any) -> dict[str, Channel]:
    """The channels configured in hq.toml (`MessagingConfig`), by name."""
    out: dict[str, Channel] = {}
    if config.whatsapp is not None:
        from .whatsapp import WhatsAppChannel

        out["whatsapp"] = WhatsAppChannel(config.whatsapp)
    if config.email is not None:
        from .email import EmailChannel

        out["email"] = EmailChannel(config.email)
    if config.sms is not None:
        from .sms import SmsChannel

        out["sms"] = SmsChannel(config.sms)
    return out
