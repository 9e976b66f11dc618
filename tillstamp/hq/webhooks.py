"""Provider callbacks and the one-click unsubscribe, mounted by `hq/app.py`:

    GET  /v1/webhooks/whatsapp       the hub.challenge handshake (verify token from the environment)
    POST /v1/webhooks/whatsapp       statuses and inbound messages, X-Hub-Signature-256 checked
    POST /v1/webhooks/sms            the SMS gateway's statuses and inbound texts, X-SMS-Signature checked
    GET  /v1/unsubscribe/{token}     a page with one button (a GET never unsubscribes: mail scanners follow links)
    POST /v1/unsubscribe/{token}     RFC 8058 one-click: withdraws the channel's consent

The routes need hq.toml's `MessagingConfig` in `app.state.messaging` (`hq serve --config`);
without it they answer 404. A callback is applied once per (message id, status): a provider's
retry or a replayed body changes nothing. A forged one (bad signature) is refused with 401.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from . import store_flows as sf
from .channels.sms import sms_signature
from .channels.whatsapp import STOPPED_MARKETING, phone_of_wa_id, signature_ok
from .messaging import MessagingConfig
from .optout import BadToken, read_token
from .service import Hq

STOP_WORDS = frozenset({"STOP", "BERHENTI", "UNSUBSCRIBE", "STOP ALL"})
SMS_WINDOW_S = 300  # a signed SMS callback older than this is a replay


def _config(request: Request) -> MessagingConfig | None:
    return getattr(request.app.state, "messaging", None)


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def is_stop(text: str) -> bool:
    """Whether an inbound text asks to stop (Indonesian or English)."""
    return " ".join(text.strip().upper().split()) in STOP_WORDS


def apply_whatsapp(hq: Hq, payload: dict[str, Any]) -> dict[str, int]:
    """Apply a verified WhatsApp webhook body: statuses settle messages, 131050 and STOP
    withdraw WhatsApp consent. Returns counts (applied, duplicates, withdrawn)."""
    store = hq.store
    now = hq.clock()
    out = {"applied": 0, "duplicates": 0, "withdrawn": 0}
    for entry in payload.get("entry") or []:
        for change in entry.get("changes") or []:
            value = change.get("value") or {}
            for st in value.get("statuses") or []:
                wamid, status = str(st.get("id", "")), str(st.get("status", ""))
                if not wamid or not status:
                    continue
                if not sf.first_time(store, "whatsapp", f"{wamid}:{status}", now):
                    out["duplicates"] += 1
                    continue
                errors = st.get("errors") or []
                codes = [e.get("code") for e in errors if isinstance(e, dict)]
                msg = sf.settle(store, ref=st.get("biz_opaque_callback_data"), provider_id=wamid, status=status,
                                now=now, error=json.dumps(errors)[:500] if errors else None)
                out["applied"] += 1
                if status == "failed" and STOPPED_MARKETING in codes:
                    members = [msg["member"]] if msg else []
                    if not members and st.get("recipient_id"):
                        phone = phone_of_wa_id(str(st["recipient_id"]))
                        members = sf.members_by_phone(store, phone) if phone else []
                    for m in members:
                        out["withdrawn"] += sf.withdraw_consent(store, m, "whatsapp",
                                                                f"whatsapp:{STOPPED_MARKETING}:{wamid}", now)
            for m in value.get("messages") or []:
                mid = str(m.get("id", ""))
                text = (m.get("text") or {}).get("body", "") if m.get("type") == "text" else ""
                if not mid or not is_stop(str(text)):
                    continue
                if not sf.first_time(store, "whatsapp", f"in:{mid}", now):
                    out["duplicates"] += 1
                    continue
                phone = phone_of_wa_id(str(m.get("from", "")))
                for member in sf.members_by_phone(store, phone) if phone else []:
                    out["withdrawn"] += sf.withdraw_consent(store, member, "whatsapp", f"whatsapp:stop:{mid}", now)
                out["applied"] += 1
    return out


def apply_sms(hq: Hq, payload: dict[str, Any]) -> dict[str, int]:
    """Apply a verified SMS gateway callback (status or inbound STOP)."""
    store = hq.store
    now = hq.clock()
    out = {"applied": 0, "duplicates": 0, "withdrawn": 0}
    kind, gid = payload.get("type"), str(payload.get("id", ""))
    if kind == "status" and gid and payload.get("status"):
        status = str(payload["status"])
        if not sf.first_time(store, "sms", f"{gid}:{status}", now):
            out["duplicates"] += 1
            return out
        sf.settle(store, ref=payload.get("reference"), provider_id=gid, status=status, now=now,
                  error=payload.get("error"))
        out["applied"] += 1
    elif kind == "inbound" and gid and is_stop(str(payload.get("text", ""))):
        if not sf.first_time(store, "sms", f"in:{gid}", now):
            out["duplicates"] += 1
            return out
        from ..loyalty.phone import PhoneError, normalize_phone

        try:
            phone = normalize_phone(str(payload.get("from", "")))
        except PhoneError:
            return out
        for member in sf.members_by_phone(store, phone):
            out["withdrawn"] += sf.withdraw_consent(store, member, "sms", f"sms:stop:{gid}", now)
        out["applied"] += 1
    return out


_PAGE = """<!doctype html><html lang="id"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1><p>{text}</p>{form}</main></body></html>"""


def mount_webhooks(app: FastAPI, hq: Hq) -> None:
    """Add the webhook and unsubscribe routes to the HQ app."""

    @app.get("/v1/webhooks/whatsapp", include_in_schema=False)
    def wa_verify(request: Request) -> Response:
        cfg = _config(request)
        if cfg is None or cfg.whatsapp is None or not cfg.whatsapp.verify_token:
            return _refuse(404, "not_configured", "WhatsApp is not configured on this HQ")
        q = request.query_params
        if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == cfg.whatsapp.verify_token:
            return PlainTextResponse(q.get("hub.challenge", ""))
        return _refuse(403, "bad_verify_token", "hub.verify_token does not match")

    @app.post("/v1/webhooks/whatsapp", include_in_schema=False)
    async def wa_hook(request: Request) -> Response:
        cfg = _config(request)
        if cfg is None or cfg.whatsapp is None:
            return _refuse(404, "not_configured", "WhatsApp is not configured on this HQ")
        body = await request.body()
        if not signature_ok(cfg.whatsapp.app_secret, body, request.headers.get("x-hub-signature-256")):
            return _refuse(401, "bad_signature", "X-Hub-Signature-256 does not verify")
        try:
            payload = json.loads(body)
        except ValueError:
            return _refuse(400, "bad_body", "body is not JSON")
        if not isinstance(payload, dict):
            return _refuse(400, "bad_body", "body is not a JSON object")
        return JSONResponse({"ok": True, **await run_in_threadpool(apply_whatsapp, hq, payload)})

    @app.post("/v1/webhooks/sms", include_in_schema=False)
    async def sms_hook(request: Request) -> Response:
        cfg = _config(request)
        if cfg is None or cfg.sms is None or not cfg.sms.webhook_secret:
            return _refuse(404, "not_configured", "the SMS gateway's webhook is not configured on this HQ")
        body = await request.body()
        stamp = request.headers.get("x-sms-timestamp", "")
        sig = request.headers.get("x-sms-signature", "")
        import hmac

        if not stamp.isdigit() or not hmac.compare_digest(sms_signature(cfg.sms.webhook_secret, stamp, body), sig):
            return _refuse(401, "bad_signature", "X-SMS-Signature does not verify")
        if abs(int(stamp) - hq.clock().timestamp()) > SMS_WINDOW_S:
            return _refuse(401, "stale", f"X-SMS-Timestamp is more than {SMS_WINDOW_S}s from HQ time (replay?)")
        try:
            payload = json.loads(body)
        except ValueError:
            return _refuse(400, "bad_body", "body is not JSON")
        if not isinstance(payload, dict):
            return _refuse(400, "bad_body", "body is not a JSON object")
        return JSONResponse({"ok": True, **await run_in_threadpool(apply_sms, hq, payload)})

    def _token(request: Request, token: str) -> tuple[str, str] | Response:
        cfg = _config(request)
        if cfg is None:
            return _refuse(404, "not_configured", "messaging is not configured on this HQ")
        try:
            return read_token(cfg.unsubscribe_secret, token)
        except BadToken as e:
            return HTMLResponse(_PAGE.format(title="Tautan tidak berlaku", text=html.escape(str(e)), form=""),
                                status_code=400)

    @app.get("/v1/unsubscribe/{token}", include_in_schema=False)
    def unsubscribe_page(request: Request, token: str) -> Response:
        got = _token(request, token)
        if isinstance(got, Response):
            return got
        form = (f'<form method="post" action="/v1/unsubscribe/{html.escape(token)}">'
                '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
                '<button type="submit">Berhenti berlangganan / Unsubscribe</button></form>')
        return HTMLResponse(_PAGE.format(title="Berhenti berlangganan email?",
                                         text="Kamu tidak akan menerima email promosi lagi.", form=form))

    @app.post("/v1/unsubscribe/{token}", include_in_schema=False)
    async def unsubscribe(request: Request, token: str) -> Response:
        got = _token(request, token)
        if isinstance(got, Response):
            return got
        member, channel = got
        await run_in_threadpool(sf.withdraw_consent, hq.store, member, channel, f"unsubscribe:{channel}",
                                hq.clock())
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse({"ok": True, "member": member, "channel": channel, "consent": False})
        return HTMLResponse(_PAGE.format(title="Sudah berhenti berlangganan",
                                         text="Kamu tidak akan menerima email promosi lagi. Terima kasih.", form=""))
