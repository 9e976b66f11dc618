"""WhatsApp Business Cloud API: template messages and the signature of its webhooks.

    POST {api_base}/{phone_number_id}/messages
    Authorization: Bearer {token}
    {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "6281234567890",
     "type": "template",
     "template": {"name": "winback_14d", "language": {"code": "id"},
                  "components": [{"type": "body", "parameters": [{"type": "text", "text": "Budi"}]}]},
     "biz_opaque_callback_data": "tsm1-..."}
    -> 200 {"messaging_product": "whatsapp", "contacts": [...], "messages": [{"id": "wamid...."}]}

`biz_opaque_callback_data` comes back in every status webhook of the message, so a message
whose send timed out (no wamid known) is still settled by its own key.
"""

from __future__ import annotations

import hashlib
import hmac

from ..messaging import WhatsAppConfig
from . import Outgoing, Rejected, SendResult
from .http import Sessions, post_json

STOPPED_MARKETING = 131050  # the user stopped marketing messages from this business


def wa_id(phone: str) -> str:
    """An E.164 number as WhatsApp writes it (digits, no plus)."""
    return phone.lstrip("+")


def phone_of_wa_id(wa: str) -> str | None:
    """A WhatsApp id (6281...) as E.164, or None if it is not a phone number."""
    # phonenumbers' metadata loads only when a webhook needs it, not with the app
    from ...loyalty.phone import PhoneError, normalize_phone

    try:
        return normalize_phone("+" + wa.lstrip("+"))
    except PhoneError:
        return None


def signature_ok(app_secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body with the app secret>`."""
    if not header or not header.startswith("sha256="):
        return False
    want = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, header.removeprefix("sha256="))


class WhatsAppChannel:
    """Template messages through the Cloud API."""

    name = "whatsapp"

    def __init__(self, config: WhatsAppConfig):
        self.config = config
        self.url = f"{config.api_base}/{config.phone_number_id}/messages"
        self.sessions = Sessions(self.url)

    def body(self, msg: Outgoing) -> dict[str, object]:
        """The request body for a template message."""
        if msg.template is None:
            raise Rejected("no WhatsApp template for this message")
        template: dict[str, object] = {"name": msg.template, "language": {"code": msg.language}}
        if msg.params:
            template["components"] = [{"type": "body", "parameters": [{"type": "text", "text": p}
                                                                       for p in msg.params]}]
        return {"messaging_product": "whatsapp", "recipient_type": "individual", "to": wa_id(msg.to),
                "type": "template", "template": template, "biz_opaque_callback_data": msg.ref}

    def send(self, msg: Outgoing) -> SendResult:
        """Send one template message; its wamid."""
        _, data = post_json(self.sessions.get(), self.url, self.config.token, self.body(msg), self.config.timeout_s)
        try:
            return SendResult(str(data["messages"][0]["id"]))
        except (KeyError, IndexError, TypeError):
            # 2xx means Meta accepted it: the message is out even if the answer is odd.
            return SendResult("")

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.sessions.close()
