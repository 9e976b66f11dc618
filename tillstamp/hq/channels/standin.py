"""A stand-in for the WhatsApp Cloud API and the SMS gateway on loopback, speaking their HTTP:
`POST /{version}/{phone_number_id}/messages` with a bearer token and a template body, and
`POST /sms/send` with the gateway's JSON. It keeps every accepted message and can produce the
provider's signed status callbacks. `tillstamp demo` sends its flows here (nothing leaves the
machine), and the tests use it as the provider, misbehaving on purpose where they ask it to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WA_TOKEN = "wa-token-123"
WA_SECRET = "wa-app-secret"
WA_VERIFY = "wa-verify"
SMS_TOKEN = "sms-token-456"
SMS_SECRET = "sms-hook-secret"
PHONE_NUMBER_ID = "1234567890"


class StandInProvider:
    """The stand-in's state: what it received, and how it should misbehave next."""

    def __init__(self) -> None:
        # accepted messages: {"channel", "ref", "to", "body", "id", "conn" (the client's port)}
        self.received: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.delay_s = 0.0  # answer only after this long (the message is accepted before the wait)
        self.error_for: dict[str, tuple[int, dict[str, Any]]] = {}  # recipient -> (status, body); nothing accepted
        self.throttle = 0  # answer 429 to the next N requests
        self.n = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        """The stand-in's address (http://127.0.0.1:PORT)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def refs(self) -> Counter[str]:
        """How many times each idempotency reference was accepted."""
        with self.lock:
            return Counter(m["ref"] for m in self.received)

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API: one connection per client

            def log_message(self, *a: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                # headers and body in one write: two small writes meet Nagle and delayed ACKs (40 ms)
                self._headers_buffer.append(b"\r\n" + data)  # type: ignore[attr-defined]
                self.flush_headers()

            def do_GET(self) -> None:
                # What was accepted, for a stand-in running in its own process (benchmarks):
                # how many messages, and the most times one idempotency reference arrived.
                if self.path != "/standin/received":
                    return self._answer(404, {"error": {"message": "no such path"}})
                refs = fake.refs()
                self._answer(200, {"accepted": sum(refs.values()), "refs": len(refs),
                                   "most_per_ref": max(refs.values(), default=0)})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                auth = self.headers.get("Authorization", "")
                if self.path == f"/v23.0/{PHONE_NUMBER_ID}/messages":
                    if auth != f"Bearer {WA_TOKEN}":
                        return self._answer(401, {"error": {"message": "bad token", "code": 190}})
                    ok = (body.get("messaging_product") == "whatsapp" and body.get("type") == "template"
                          and body["template"]["name"] and body["template"]["language"]["code"])
                    if not ok:
                        return self._answer(400, {"error": {"message": "bad body", "code": 100}})
                    channel, ref, to = "whatsapp", body.get("biz_opaque_callback_data"), body["to"]
                elif self.path == "/sms/send":
                    if auth != f"Bearer {SMS_TOKEN}":
                        return self._answer(401, {"error": {"message": "bad token"}})
                    channel, ref, to = "sms", body.get("reference"), body["to"]
                else:
                    return self._answer(404, {"error": {"message": "no such path"}})
                with fake.lock:
                    if fake.throttle > 0:
                        fake.throttle -= 1
                        fake.refused.append(body)
                        return self._answer(429, {"error": {"message": "slow down", "code": 130429}})
                    if to in fake.error_for:
                        status, err = fake.error_for[to]
                        fake.refused.append(body)
                        return self._answer(status, err)
                    fake.n += 1
                    mid = f"wamid.{fake.n:08d}" if channel == "whatsapp" else f"sms-{fake.n:08d}"
                    fake.received.append({"channel": channel, "ref": ref, "to": to, "body": body, "id": mid,
                                          "conn": self.client_address[1]})
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if channel == "whatsapp":
                    self._answer(200, {"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                                       "messages": [{"id": mid}]})
                else:
                    self._answer(200, {"id": mid, "status": "queued"})

        return Handler


def main() -> None:
    """`python -m tillstamp.hq.channels.standin`: serve in this process (so the stand-in does not
    share a client's interpreter lock), print the base address, stop when stdin closes."""
    import sys

    provider = StandInProvider()
    print(provider.base, flush=True)
    sys.stdin.read()
    provider.close()


def wa_signature(body: bytes, secret: str = WA_SECRET) -> str:
    """The `X-Hub-Signature-256` value the provider sends with a webhook body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def wa_status(wamid: str, status: str, ref: str | None = None, recipient: str = "6281200000001",
              errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A status webhook body (sent, delivered, read, failed) for one message."""
    st: dict[str, Any] = {"id": wamid, "status": status, "timestamp": "1772420400", "recipient_id": recipient}
    if ref:
        st["biz_opaque_callback_data"] = ref
    if errors:
        st["errors"] = errors
    return _wa_envelope({"statuses": [st]})


def wa_inbound(mid: str, from_wa: str, text: str) -> dict[str, Any]:
    """An inbound text message webhook body (e.g. a customer replying STOP)."""
    return _wa_envelope({"contacts": [{"profile": {"name": "X"}, "wa_id": from_wa}],
                         "messages": [{"from": from_wa, "id": mid, "timestamp": "1772420400", "type": "text",
                                       "text": {"body": text}}]})


def _wa_envelope(value: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "6281100000000",
                                                      "phone_number_id": PHONE_NUMBER_ID}, **value}}]}]}


if __name__ == "__main__":
    main()
