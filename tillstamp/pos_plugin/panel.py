"""The cashier panel at `/`: server-rendered Jinja2, live through the event stream.

`/` renders the whole page; `/panel/live` renders only the part that changes, which the
page's script fetches again after each event, so every piece of HTML is drawn in one place.
The panel's actions go to `/panel/*` (not `/v1`): they answer in the panel's language, and a
redemption there also prints the barista's slip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..agent.runtime import Runtime
from ..agent.service import Refused
from . import ops
from .panel_words import WORDS, refusal

HERE = Path(__file__).parent
def rupiah(amount: int) -> str:
    """`Rp 25.000`."""
    return f"Rp {amount:,}".replace(",", ".")


def activity(event: dict[str, Any], w: dict[str, str]) -> str:
    """One line of the activity list for an event."""
    kind = event["type"]
    n = event.get("stamps_awarded", event.get("stamps", 0))
    if kind == "sale" and not event.get("member"):
        kind, n = "sale_guest", event.get("claim_stamps", 0)
    return w[f"ev_{kind}"].format(receipt=event.get("receipt", ""), n=n, reward=event.get("reward", ""),
                                  name=event.get("name") or event.get("member", ""))


def device_state(name: str, state: str, w: dict[str, str]) -> tuple[str, str]:
    """(device name, state) in the panel's language; unknown ones as they are."""
    return w.get(f"dev_{name}", name), w.get(f"state_{state}", state)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["rupiah"] = rupiah
    return env


def add_panel(app: FastAPI, rt: Runtime) -> None:
    """Add `/`, `/panel/live` and the panel's script and style to `app`."""
    env = _env()
    run = app.state.run
    check_key = app.state.check_key
    key_dependency = app.state.key_dependency

    def language(request: Request) -> str:
        lang = request.query_params.get("lang") or request.cookies.get("tillstamp_lang") or rt.till.config.language
        return lang if lang in WORDS else "id"

    async def render(request: Request, template: str) -> HTMLResponse:
        lang = language(request)
        state = await run(ops.panel_state, lang)
        html = env.get_template(template).render(
            s=state, w=WORDS[lang], lang=lang, activity=activity, device_state=device_state,
            store=rt.till.config.store_name or rt.till.config.store, terminal=rt.till.config.terminal)
        resp = HTMLResponse(html)
        if request.query_params.get("lang") in WORDS:
            resp.set_cookie("tillstamp_lang", lang, samesite="strict")
        key = request.query_params.get("key")
        if key:  # a browser cannot send headers from a link: the key travels once, then as a cookie
            resp.set_cookie("tillstamp_key", key, httponly=True, samesite="strict")
        return resp

    @app.get("/", include_in_schema=False)
    async def panel(request: Request) -> HTMLResponse:
        check_key(request)
        return await render(request, "panel.html")

    @app.get("/panel/live", include_in_schema=False, dependencies=[Depends(key_dependency)])
    async def live(request: Request) -> HTMLResponse:
        return await render(request, "live.html")

    for name, media in (("panel.js", "text/javascript"), ("panel.css", "text/css")):
        body = (HERE / "static" / name).read_bytes()

        async def static(body: bytes = body, media: str = media) -> Response:
            return Response(body, media_type=media, headers={"Cache-Control": "max-age=60"})

        app.add_api_route(f"/static/{name}", static, include_in_schema=False)

    _add_actions(app, rt, language)


class _Bad(Exception):
    """A panel request the panel refuses before asking the till (empty or malformed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise _Bad("invalid_request") from None
    if not isinstance(data, dict):
        raise _Bad("invalid_request")
    return data


def _text(data: dict[str, Any], name: str, limit: int = 512, *, empty: str = "invalid_request") -> str:
    value = data.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise _Bad("invalid_request")
    if not value.strip():
        raise _Bad(empty)
    return value.strip()


def _add_actions(app: FastAPI, rt: Runtime, language: Any) -> None:
    """The panel's buttons: identify, clear, enrol, redeem (+ slip), claim, refund, reprint, card."""
    run = app.state.run
    key = [Depends(app.state.key_dependency)]

    def answer(request: Request, message_key: str, **data: Any) -> JSONResponse:
        w = WORDS[language(request)]
        return JSONResponse({"ok": True, "message": w[message_key].format(**data), **data})

    def refused(request: Request, reason: str, status: int) -> JSONResponse:
        return JSONResponse({"ok": False, "error": reason, "message": refusal(reason, language(request))},
                            status_code=status)

    def action(path: str) -> Any:
        def wrap(fn: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                from .api import status_for

                try:
                    return await fn(request)  # type: ignore[no-any-return]
                except _Bad as e:
                    return refused(request, e.reason, 422)
                except Refused as e:
                    return refused(request, e.reason, status_for(e.reason))

            app.add_api_route(path, endpoint, methods=["POST"], include_in_schema=False,
                              dependencies=key)
            return fn
        return wrap

    @action("/panel/identify")
    async def identify(request: Request) -> Response:
        text = _text(await _body(request), "q", empty="empty")
        event = await run(ops.identify, text)
        if event.get("kind") == "claim":
            return answer(request, "claim_offer", receipt=event["receipt"], n=event["stamps"])
        return answer(request, "now_member", name=event.get("name") or event["member"][-6:],
                      member=event["member"])

    @action("/panel/clear")
    async def clear(request: Request) -> Response:
        await run(ops.clear_panel)
        return answer(request, "next_customer")

    @action("/panel/enrol")
    async def enrol(request: Request) -> Response:
        data = await _body(request)
        consent = data.get("consent") or []
        if not isinstance(consent, list) or not all(isinstance(c, str) for c in consent):
            raise _Bad("invalid_consent")
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise _Bad("invalid_name")
        fields = {"phone": _text(data, "phone", 32, empty="invalid_phone"),
                  "name": name.strip() if name and name.strip() else None, "consent": consent[:3]}
        out = await run(ops.enroll, fields)
        return answer(request, "enrolled_result", name=out["name"] or out["member"][-6:],
                      member=out["member"], card="card" in out)

    @action("/panel/redeem")
    async def redeem(request: Request) -> Response:
        data = await _body(request)
        member, reward = _text(data, "member"), _text(data, "reward", 64)
        w = WORDS[language(request)]

        def redeem_and_slip(rt: Runtime) -> dict[str, Any]:
            from ..drivers.receipt import Slip

            out = ops.redeem(rt, member, reward)
            name = ops.member_name(rt, out["member"])
            cost = -out["stamps"]
            slip = Slip(ops.shop_name(rt), w["slip_title"],
                        rt.till.service.now().astimezone(rt.till.program.zone),
                        str(out.get("name", reward)),
                        (name, w["slip_line"].format(cost=cost, balance=out["balance"])))
            return {"name": name, "reward": out.get("name", reward), "cost": cost,
                    "balance": out["balance"], "printed": ops.print_slip(rt, slip)}

        out = await run(redeem_and_slip)
        message = (w["redeemed_result"].format(**out) + " "
                   + (w["slip_printed"] if out["printed"] else w["no_printer"]))
        return JSONResponse({"ok": True, "message": message, **out})

    @action("/panel/claim")
    async def claim(request: Request) -> Response:
        data = await _body(request)
        out = await run(ops.claim, _text(data, "payload", 1024), _text(data, "member"))
        name = await run(ops.member_name, out["member"])
        return answer(request, "claim_done", receipt=out.get("receipt", ""), n=out["stamps"], name=name)

    @action("/panel/refund")
    async def refund(request: Request) -> Response:
        receipt = _text(await _body(request), "receipt", 64)
        out = await run(ops.refund, receipt, None)
        return answer(request, "refund_done", receipt=receipt, n=-out["stamps"])

    @action("/panel/reprint")
    async def reprint(request: Request) -> Response:
        receipt = _text(await _body(request), "receipt", 64)
        await run(ops.reprint, receipt)
        return answer(request, "reprint_done", receipt=receipt)

    @action("/panel/print-card")
    async def print_card(request: Request) -> Response:
        member = _text(await _body(request), "member")
        title = WORDS[language(request)]["card_title"]
        printed = await run(lambda rt: ops.print_slip(rt, ops.card_slip(rt, member, title)))
        if not printed:
            raise Refused("no_printer", "no printer")
        return answer(request, "card_printed")

    @app.get("/panel/card/{member}.png", include_in_schema=False, dependencies=key)
    async def card(member: str, request: Request) -> Response:
        try:
            png = await run(ops.card_png, member)
        except Refused as e:
            return refused(request, e.reason, 404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
