"""Rendering shared by the staff and customer pages: the Jinja2 environment, the language,
page-or-JSON answers, cookies and form parsing.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import charts
from .auth import same
from .codes import WebConfig
from .i18n import pick_lang, words

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
PRE_COOKIE = "ts_pre"  # a form token for pages without a session (login, the customer's phone form)
MAX_FORM = 256 * 1024
# Everything comes from HQ itself: no inline script, no file from elsewhere.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _rupiah(v: Any) -> str:
    return "Rp " + f"{int(v or 0):,}".replace(",", ".")


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * float(v):.1f} %".replace(".", ",")


def _thousands(v: Any) -> str:
    return f"{int(v or 0):,}".replace(",", ".")


class Renderer:
    """Templates and the rules every page answer follows."""

    def __init__(self, config: WebConfig):
        self.config = config
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters.update(rupiah=_rupiah, pct=_pct, n=_thousands)
        self.env.globals.update(bars=charts.bars, hbars=charts.hbars, spark=charts.spark)

    def lang(self, request: Request) -> str:
        """The language of this request."""
        return pick_lang(request.query_params.get("lang"), request.cookies.get("lang"))

    def html(self, request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """A page in the request's language (a `?lang=` choice is kept in a cookie)."""
        lang = self.lang(request)
        body = self.env.get_template(template).render(t=words(lang), lang=lang, path=request.url.path, **ctx)
        r = HTMLResponse(body, status_code=status)
        self.headers(r)
        if request.query_params.get("lang") == lang:
            self.cookie(request, r, "lang", lang, max_age=365 * 86400, http_only=False)
        return r

    def page(self, request: Request, template: str, data: dict[str, Any], **ctx: Any) -> Response:
        """The page, or its JSON twin with `?format=json`: the same data, two renderings."""
        if request.query_params.get("format") == "json":
            r = JSONResponse(json.loads(json.dumps(data, default=str)))
            self.headers(r)
            return r
        return self.html(request, template, data=data, **ctx)

    def headers(self, r: Response) -> None:
        """Security headers on every page."""
        r.headers["Content-Security-Policy"] = CSP
        r.headers["X-Content-Type-Options"] = "nosniff"
        r.headers["Referrer-Policy"] = "same-origin"
        r.headers["Cache-Control"] = "no-store"

    def cookie(self, request: Request, r: Response, name: str, value: str, *, max_age: int | None = None,
               http_only: bool = True) -> None:
        """Set a cookie: HttpOnly, SameSite=Lax, and Secure when HQ is reached over https (its
        public address says so, or the request came over https, directly or via the proxy)."""
        secure = self.config.secure or request.url.scheme == "https"
        r.set_cookie(name, value, max_age=max_age, httponly=http_only, samesite="lax", secure=secure, path="/")

    def pre_token(self, request: Request, r: Response | None = None) -> str:
        """The form token of a page without a session (set in a cookie when there is none yet)."""
        tok = request.cookies.get(PRE_COOKIE)
        if not tok or len(tok) > 64:
            tok = secrets.token_urlsafe(24)
            request.state.new_pre = tok
        return tok

    def keep_pre(self, request: Request, r: Response) -> Response:
        """Send the pre-session form token cookie if this request made one."""
        tok = getattr(request.state, "new_pre", None)
        if tok:
            self.cookie(request, r, PRE_COOKIE, tok, max_age=3600)
        return r


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind these pages send)."""
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    out: dict[str, str] = {}
    for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        out.setdefault(k, v)
    return out


def csrf_ok(expected: str | None, got: str | None) -> bool:
    """True when a form's token is the session's."""
    return bool(expected) and bool(got) and same(str(expected), str(got))


def client_address(request: Request) -> str:
    """The caller's address (for rate limits)."""
    return request.client.host if request.client else "-"
