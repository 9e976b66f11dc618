"""An SMS HTTP gateway. The request shape (documented in docs/FLOWS.md, kept plain so most
Indonesian gateways fit it behind a small adapter):

    POST {url}
    Authorization: Bearer {token}
    {"to": "+6281234567890", "text": "...", "reference": "tsm1-..."}
    -> 2xx {"id": "gateway message id", "status": "queued"}

Status and inbound callbacks come to `POST /v1/webhooks/sms`, signed with
`X-SMS-Signature: sha256=<hex HMAC-SHA256 of "{X-SMS-Timestamp}.{raw body}">`:

    {"type": "status", "id": "...", "reference": "tsm1-...", "status": "delivered" | "failed"}
    {"type": "inbound", "id": "...", "from": "+6281234567890", "text": "STOP"}
"""

from __future__ import annotations

import hashlib
import hmac

from ..messaging import SmsConfig
from . import Outgoing, SendResult
from .http import Sessions, post_json


def sms_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-SMS-Signature for a callback."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


class SmsChannel:
    """Text messages through the gateway."""

    name = "sms"

    def __init__(self, config: SmsConfig):
        self.config = config
        self.sessions = Sessions(config.url)

    def send(self, msg: Outgoing) -> SendResult:
        """Send one SMS; the gateway's id."""
        _, data = post_json(self.sessions.get(), self.config.url, self.config.token,
                            {"to": msg.to, "text": msg.body, "reference": msg.ref}, self.config.timeout_s)
        return SendResult(str(data.get("id", "")) if isinstance(data, dict) else "")

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.sessions.close()
