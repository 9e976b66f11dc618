"""The staff dashboard's routes: login, the pages and their JSON twins, and the few forms
(segment save, program publish, erasure). Data comes from `dashboard.py`; every POST checks
the session's CSRF token; a page without a session sends the browser to /login.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ...loyalty.program import ProgramError
from ..crm import Crm, Forbidden, NotFound
from ..segments import SegmentError
from ..staff import Principal
from . import dashboard
from .auth import Auth, RateLimiter, WebSession
from .render import Renderer, client_address, csrf_ok, form

COOKIE = "ts_staff"
LOGINS_PER_ADDRESS = 10
LOGINS_PER_USER = 5
LOGIN_WINDOW = dt.timedelta(minutes=15)


class NeedLogin(Exception):
    """A page asked for without a staff session."""


class BadCsrf(Exception):
    """A POST without its session's CSRF token."""


def mount_staff(app: FastAPI, crm: Crm, auth: Auth, ui: Renderer) -> None:
    """Add the staff pages to the HQ app."""
    per_address = RateLimiter(LOGINS_PER_ADDRESS, LOGIN_WINDOW, crm.hq.clock)
    per_user = RateLimiter(LOGINS_PER_USER, LOGIN_WINDOW, crm.hq.clock)
    r = APIRouter(include_in_schema=False)

    @app.exception_handler(NeedLogin)
    async def _login(request: Request, _: NeedLogin) -> Response:
        if request.query_params.get("format") == "json":
            return JSONResponse({"error": "unauthorized", "message": "log in at /login"}, status_code=401)
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(nxt)}", status_code=303)

    @app.exception_handler(BadCsrf)
    async def _csrf(request: Request, _: BadCsrf) -> Response:
        return ui.html(request, "error.html", status=403, message_key="csrf")

    def who(request: Request) -> tuple[Principal, WebSession | None]:
        """The staff user of a request: a session cookie, or a bearer token (for the JSON twins)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            p = crm.principal(token.strip())
            if p is not None:
                return p, None
        s = auth.session(request.cookies.get(COOKIE), "staff")
        p = auth.principal(s) if s else None
        if s is None or p is None:
            raise NeedLogin()
        return p, s

    async def posted(request: Request) -> tuple[Principal, dict[str, str]]:
        """A form POST's user and fields, after its CSRF token is checked."""
        p, s = await run_in_threadpool(who, request)
        f = await form(request)
        token = f.get("csrf") or request.headers.get("x-csrf-token")
        if s is None or not csrf_ok(s.csrf, token):
            raise BadCsrf()
        return p, f

    def show(request: Request, template: str, data: dict[str, Any], p: Principal, s: WebSession | None,
             **ctx: Any) -> Response:
        return ui.page(request, template, data, me=p, csrf=s.csrf if s else "", **ctx)

    def refused(request: Request, e: Exception, p: Principal, s: WebSession | None) -> Response:
        status, key = (403, "forbidden") if isinstance(e, Forbidden) else (404, "not_found")
        if request.query_params.get("format") == "json":
            return JSONResponse({"error": key, "message": str(e)}, status_code=status)
        return ui.html(request, "error.html", status=status, message_key=key, me=p, csrf=s.csrf if s else "")

    # -- login ---------------------------------------------------------------------------

    @r.get("/login")
    def login_page(request: Request, next: str = "/") -> Response:
        tok = ui.pre_token(request)
        return ui.keep_pre(request, ui.html(request, "login.html", pre=tok, next=_safe_next(next), error=None))

    @r.post("/login")
    async def login(request: Request) -> Response:
        f = await form(request)
        nxt = _safe_next(f.get("next", "/"))
        if not csrf_ok(request.cookies.get("ts_pre"), f.get("csrf")):
            raise BadCsrf()
        name = f.get("name", "").strip()[:64]
        if not per_address.allow(client_address(request)) or not per_user.allow(name.lower()):
            return ui.html(request, "login.html", status=429, pre=f.get("csrf"), next=nxt, error="login_slow")
        p = await run_in_threadpool(auth.login, name, f.get("password", ""))
        if p is None:
            return ui.html(request, "login.html", status=401, pre=f.get("csrf"), next=nxt, error="login_failed")
        cookie, _ = await run_in_threadpool(auth.start, "staff", p.name)
        resp = RedirectResponse(nxt, status_code=303)
        ui.cookie(request, resp, COOKIE, cookie)
        return resp

    @r.post("/logout")
    async def logout(request: Request) -> Response:
        await posted(request)
        await run_in_threadpool(auth.end, request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- pages ---------------------------------------------------------------------------

    @r.get("/")
    def overview(request: Request, store: str | None = None, days: int = 30) -> Response:
        p, s = who(request)
        return show(request, "overview.html", dashboard.overview(crm, p, store=store, days=days), p, s,
                    periods=dashboard.PERIODS)

    @r.get("/stores")
    def stores(request: Request) -> Response:
        p, s = who(request)
        return show(request, "stores.html", dashboard.stores(crm, p), p, s)

    @r.get("/members")
    def members(request: Request, q: str = "") -> Response:
        p, s = who(request)
        return show(request, "members.html", dashboard.members(crm, p, q), p, s)

    @r.get("/members/{member_id}")
    def member(request: Request, member_id: str) -> Response:
        p, s = who(request)
        try:
            data = dashboard.member(crm, p, member_id, ui.lang(request))
        except (NotFound, Forbidden) as e:
            return refused(request, e, p, s)
        return show(request, "member.html", data, p, s)

    @r.post("/members/{member_id}/erase")
    async def erase(request: Request, member_id: str) -> Response:
        p, f = await posted(request)
        if f.get("confirm") != "HAPUS":
            return RedirectResponse(f"/members/{quote(member_id)}", status_code=303)
        try:
            await run_in_threadpool(dashboard.erase, crm, p, member_id)
        except (NotFound, Forbidden) as e:
            return refused(request, e, p, None)
        return RedirectResponse(f"/members/{quote(member_id)}", status_code=303)

    @r.get("/segments")
    def segments(request: Request) -> Response:
        p, s = who(request)
        return show(request, "segments.html", dashboard.segments(crm, p), p, s)

    @r.post("/segments/preview")
    async def preview(request: Request) -> Response:
        """The builder's live count: {"definition": {...}} -> {"count": N} (JSON, CSRF in a header)."""
        p, s = await run_in_threadpool(who, request)
        if s is None or not csrf_ok(s.csrf, request.headers.get("x-csrf-token")):
            return JSONResponse({"error": "csrf", "message": "missing or wrong X-CSRF-Token"}, status_code=403)
        try:
            body = json.loads(await request.body() or b"{}")
            definition = body.get("definition") if isinstance(body, dict) else None
            got = await run_in_threadpool(crm.preview, definition if isinstance(definition, dict) else {},
                                          None, who=p, sample=5)
        except (SegmentError, ValueError) as e:
            return JSONResponse({"error": "invalid_segment", "message": str(e)}, status_code=422)
        return JSONResponse(got.to_json())

    @r.post("/segments/save")
    async def save(request: Request) -> Response:
        p, f = await posted(request)
        try:
            definition = json.loads(f.get("definition", ""))
            if not isinstance(definition, dict):
                raise SegmentError("definition: expected a JSON object")
            await run_in_threadpool(lambda: crm.save(definition, name=f.get("name") or None, who=p))
        except (SegmentError, ValueError, Forbidden) as e:
            _, s = who(request)
            data = dashboard.segments(crm, p)
            return ui.html(request, "segments.html", status=422, data=data, me=p, csrf=s.csrf if s else "",
                           error=str(e), draft=f.get("definition", ""), draft_name=f.get("name", ""))
        return RedirectResponse("/segments", status_code=303)

    @r.get("/segments/{name}/export.csv")
    def export(request: Request, name: str) -> Response:
        p, s = who(request)
        try:
            exp = crm.export(name, None, who=p)
        except (NotFound, Forbidden) as e:
            return refused(request, e, p, s)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(exp.columns)
        w.writerows(exp.rows)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{exp.name}-{exp.as_of.isoformat()}.csv"'})

    @r.get("/flows")
    def flows(request: Request) -> Response:
        p, s = who(request)
        return show(request, "flows.html", dashboard.flows(crm, p), p, s)

    @r.get("/programs")
    def programs(request: Request) -> Response:
        p, s = who(request)
        return show(request, "programs.html", dashboard.programs(crm, p), p, s, error=None, notice=None)

    @r.post("/programs")
    async def publish(request: Request) -> Response:
        p, f = await posted(request)
        _, s = await run_in_threadpool(who, request)
        text = f.get("source", "")
        try:
            version = await run_in_threadpool(dashboard.publish, crm, p, text)
        except Forbidden as e:
            return refused(request, e, p, s)
        except (ProgramError, ValueError) as e:
            return ui.html(request, "programs.html", status=422, data=dashboard.programs(crm, p), me=p,
                           csrf=s.csrf if s else "", error=str(e), draft=text, notice=None)
        return ui.html(request, "programs.html", data=dashboard.programs(crm, p), me=p, csrf=s.csrf if s else "",
                       error=None, notice=version)

    @r.get("/audit")
    def audit(request: Request) -> Response:
        p, s = who(request)
        try:
            data = dashboard.audit(crm, p)
        except Forbidden as e:
            return refused(request, e, p, s)
        return show(request, "audit.html", data, p, s)

    app.include_router(r)


def _safe_next(nxt: str) -> str:
    """Only a path on this site (never //elsewhere) after a login."""
    return nxt if nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt else "/"
