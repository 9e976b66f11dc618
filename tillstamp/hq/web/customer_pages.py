"""The customer's pages, phone first: the receipt claim at /k/{token} and the member's own
page at /saya, both opened with phone + one-time code.

The answer to "send me a code" is the same whether or not the phone belongs to a member;
only after the code does a page show anything about the phone's owner.
"""

from __future__ import annotations

import io
from typing import Any

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from ...loyalty import events as ev
from .auth import Auth
from .customer import Customer, CustomerError
from .render import PRE_COOKIE, Renderer, client_address, csrf_ok, form

COOKIE = "ts_member"


def qr_svg(text: str) -> Markup:
    """A QR code as inline SVG (drawn here, nothing fetched)."""
    img = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buf = io.BytesIO()
    img.save(buf)
    svg = buf.getvalue().decode()
    return Markup(svg[svg.index("<svg"):])


def _claim_error(code: str) -> str:
    if code in ("claim_used", "claim_refunded", "claim_expired"):
        return code
    return "claim_bad" if code.startswith("claim_") else code


def mount_customer(app: FastAPI, customer: Customer, auth: Auth, ui: Renderer) -> None:
    """Add the customer's pages to the HQ app."""
    r = APIRouter(include_in_schema=False)

    def pre_ok(request: Request, f: dict[str, str]) -> bool:
        return csrf_ok(request.cookies.get(PRE_COOKIE), f.get("csrf"))

    def claim_page(request: Request, token: str, status: int = 200, **ctx: Any) -> Response:
        try:
            info = customer.claim_info(token)
        except CustomerError as e:
            shown = _claim_error(e.code)
            return ui.keep_pre(request, ui.html(request, "claim.html", status=400 if shown == "claim_bad" else 410,
                                                info=None, error=shown, pre=ui.pre_token(request)))
        if request.query_params.get("format") == "json":
            return JSONResponse(info.to_json())
        ctx.setdefault("error", "claim_used" if info.status == "claimed" and "done" not in ctx else None)
        return ui.keep_pre(request, ui.html(request, "claim.html", status=status, info=info,
                                            pre=ui.pre_token(request), **ctx))

    @r.get("/k/{token}")
    def claim(request: Request, token: str) -> Response:
        return claim_page(request, token, step="phone")

    @r.post("/k/{token}")
    async def claim_post(request: Request, token: str) -> Response:
        f = await form(request)
        if not pre_ok(request, f):
            return ui.html(request, "error.html", status=403, message_key="csrf")
        phone_text = f.get("phone", "")
        if "code" not in f:  # step 1: send a code
            try:
                phone = await run_in_threadpool(customer.request_code, phone_text, client_address(request))
            except CustomerError as e:
                code = e.code
                return await run_in_threadpool(lambda: claim_page(request, token, 400, step="phone",
                                                                  error=code, phone=phone_text))
            return await run_in_threadpool(lambda: claim_page(request, token, step="code", phone=phone))
        try:  # step 2: the code, then the claim
            phone = await run_in_threadpool(customer.check_code, phone_text, f.get("code", ""),
                                            client_address(request))
            _member, stamps = await run_in_threadpool(customer.claim, token, phone)
        except CustomerError as e:
            step = "code" if e.code == "bad_code" else "phone"
            shown = _claim_error(e.code)
            return await run_in_threadpool(lambda: claim_page(request, token, 400, step=step,
                                                              error=shown, phone=phone_text))
        cookie, _ = await run_in_threadpool(auth.start, "member", phone)
        resp = RedirectResponse(f"/saya?claimed={stamps}", status_code=303)
        ui.cookie(request, resp, COOKIE, cookie)
        return resp

    def me_session(request: Request) -> Any:
        return auth.session(request.cookies.get(COOKIE), "member")

    @r.get("/saya")
    def me(request: Request, claimed: int | None = None) -> Response:
        s = me_session(request)
        if s is None:
            return ui.keep_pre(request, ui.html(request, "me_login.html", step="phone", pre=ui.pre_token(request),
                                                error=None))
        member = customer.member_of(s.subject)
        data = customer.card(member) if member else None
        if request.query_params.get("format") == "json":
            return JSONResponse({"member": data})
        return ui.html(request, "me.html", data=data, csrf=s.csrf, claimed=claimed,
                       qr=qr_svg(data["card_token"]) if data else None, channels=ev.CHANNELS,
                       notice=request.query_params.get("notice"))

    @r.post("/saya")
    async def me_login(request: Request) -> Response:
        f = await form(request)
        if not pre_ok(request, f):
            return ui.html(request, "error.html", status=403, message_key="csrf")
        phone_text = f.get("phone", "")
        try:
            if "code" not in f:
                phone = await run_in_threadpool(customer.request_code, phone_text, client_address(request))
                return ui.html(request, "me_login.html", step="code", phone=phone, pre=f.get("csrf"), error=None)
            phone = await run_in_threadpool(customer.check_code, phone_text, f.get("code", ""),
                                            client_address(request))
        except CustomerError as e:
            return ui.html(request, "me_login.html", status=400, step="code" if e.code == "bad_code" else "phone",
                           phone=phone_text, pre=f.get("csrf"), error=e.code)
        cookie, _ = await run_in_threadpool(auth.start, "member", phone)
        resp = RedirectResponse("/saya", status_code=303)
        ui.cookie(request, resp, COOKIE, cookie)
        return resp

    async def member_post(request: Request) -> tuple[Any, str | None, dict[str, str]]:
        s = await run_in_threadpool(me_session, request)
        f = await form(request)
        if s is None or not csrf_ok(s.csrf, f.get("csrf")):
            return None, None, f
        member = await run_in_threadpool(customer.member_of, s.subject)
        return s, member, f

    @r.post("/saya/consent")
    async def consent(request: Request) -> Response:
        s, member, f = await member_post(request)
        if s is None:
            return ui.html(request, "error.html", status=403, message_key="csrf")
        if member:
            await run_in_threadpool(customer.set_consent, member, {c: f.get(c) == "1" for c in ev.CHANNELS})
        return RedirectResponse("/saya?notice=consent_saved", status_code=303)

    @r.get("/saya/data.json")
    def download(request: Request) -> Response:
        s = me_session(request)
        if s is None:
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        member = customer.member_of(s.subject)
        data = customer.export(member) if member else {"member": None}
        return JSONResponse(data, headers={"Content-Disposition": 'attachment; filename="data-saya.json"'})

    @r.post("/saya/delete")
    async def delete(request: Request) -> Response:
        s, member, f = await member_post(request)
        if s is None:
            return ui.html(request, "error.html", status=403, message_key="csrf")
        if f.get("confirm") != "HAPUS":
            return RedirectResponse("/saya", status_code=303)
        if member:
            await run_in_threadpool(customer.erase, member, s.subject)
        await run_in_threadpool(auth.end, request.cookies.get(COOKIE))
        resp = ui.html(request, "me_login.html", step="deleted", pre="", error=None)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @r.post("/saya/logout")
    async def logout(request: Request) -> Response:
        s, _, _ = await member_post(request)
        if s is not None:
            await run_in_threadpool(auth.end, request.cookies.get(COOKIE))
        resp = RedirectResponse("/saya", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    app.include_router(r)
