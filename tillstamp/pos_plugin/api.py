"""The POS API: FastAPI over the agent's runtime. OpenAPI at /openapi.json.

Handlers never touch the database: they submit a function of `ops` to the runtime's single
writer and await its Future, so the event loop stays free while SQLite commits.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..agent.config import ConfigError
from ..agent.failures import Failure, classify
from ..agent.runtime import Runtime, RuntimeStopped, Subscription
from ..agent.service import Refused
from ..loyalty.sale import SaleError
from . import ops
from .guard import RequestGuard, allowed_hosts, key_checker
from .models import (
    ClaimIn,
    EnrolledOut,
    ErrorOut,
    HealthOut,
    MemberIn,
    MemberOut,
    OutcomeOut,
    PrintOut,
    RedemptionIn,
    RefundIn,
    RewardOut,
    SaleIn,
    SaleOut,
)

T = TypeVar("T")
log = logging.getLogger("tillstamp.agent")
KEY_HEADER = "X-API-Key"
KEY_COOKIE = "tillstamp_key"
NOT_FOUND = {"unknown_member", "unknown_sale", "unknown_reward", "no_scan"}
CONFLICT = {"already_enrolled", "token_already_claimed", "already_refunded", "refunded",
            "insufficient_balance", "tier_not_allowed", "no_printer", "offline_cap", "receipt_reused"}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 404, 409, 422, 503)
}
HEARTBEAT = 15.0


def status_for(reason: str) -> int:
    """The HTTP status of a refusal reason: 404 unknown, 409 conflicts with state, 422 invalid."""
    if reason in NOT_FOUND:
        return 404
    if reason in CONFLICT or reason.startswith("offline"):
        return 409
    return 422


def _error(status: int, error: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


class _LoopSubscription(Subscription):
    """A hub subscription that wakes an asyncio queue on the server's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.aq: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(256)

    def put(self, event: dict[str, Any] | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:
            self.dropped += 1  # the loop is closed: the client is gone with it

    def _put(self, event: dict[str, Any] | None) -> None:
        try:
            self.aq.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1


def create_app(rt: Runtime, *, api_key: str = "", require_key: bool = False,
               bind_host: str = "127.0.0.1") -> FastAPI:
    """The POS API and the cashier panel for a running agent served on `bind_host`."""
    app = FastAPI(title="tillstamp POS API", version="1", description=(
        "Local API of the tillstamp till agent: record sales, refunds, members, rewards and "
        "claims; server-sent events of scans, awards and devices at /v1/events."),
        docs_url=None, redoc_url=None)  # /docs comes from the package, not a CDN: apidocs.py
    app.state.runtime = rt
    hosts, any_ip = allowed_hosts(bind_host, _extra_hosts(rt))
    app.add_middleware(RequestGuard, hosts=hosts, any_ip=any_ip,
                       key_check=key_checker(api_key, KEY_HEADER, KEY_COOKIE) if require_key else None)

    app.state.problem = None  # the last environment failure of a write, until a write succeeds
    writes = {ops.record_sale, ops.refund, ops.enroll, ops.redeem, ops.claim}
    boot = uuid.uuid4().hex[:8]  # this run of the agent, in every event-stream id
    from ..apidocs import add_offline_docs

    add_offline_docs(app)

    async def run(fn: Callable[..., T], *args: Any) -> T:
        try:
            fut = rt.writer.submit(fn, rt, *args)
        except RuntimeStopped as e:
            raise _Unavailable(str(e)) from None
        try:
            result = await asyncio.wrap_future(fut)
        except (sqlite3.Error, OSError, UnicodeError, RecursionError) as e:
            failure = classify(e, rt.till.config.data)
            if failure is None:
                raise
            if failure.status >= 500:
                app.state.problem = failure  # /health says so until a write succeeds again
            raise _Failed(failure) from e
        if fn in writes:
            app.state.problem = None
        return result

    def check_key(request: Request) -> None:
        if not require_key:
            return
        given = request.headers.get(KEY_HEADER) or request.cookies.get(KEY_COOKIE) or ""
        if not given and request.url.path == "/":  # the panel's first visit: a link cannot send headers
            given = request.query_params.get("key", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise _Unauthorized()

    async def key_dependency(request: Request) -> None:
        # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
        # hop (and a GIL hand-over) on every request.
        check_key(request)

    app.state.check_key = check_key
    app.state.key_dependency = key_dependency
    app.state.run = run

    @app.exception_handler(Refused)
    async def refused(_: Request, e: Refused) -> JSONResponse:
        return _error(status_for(e.reason), e.reason, str(e))

    @app.exception_handler(SaleError)
    async def bad_sale(_: Request, e: SaleError) -> JSONResponse:
        return _error(422, "invalid_sale", str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [{"loc": [str(x) for x in err.get("loc", ())], "msg": str(err.get("msg", ""))}
                   for err in e.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(x for x in first["loc"] if x != "body") or "request"
        return _error(422, "invalid_request", f"{where}: {first['msg']}", details)

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, e: _Unauthorized) -> JSONResponse:
        return _error(401, "unauthorized", f"send the till's API key in the {KEY_HEADER} header")

    @app.exception_handler(_Unavailable)
    async def unavailable(_: Request, e: _Unavailable) -> JSONResponse:
        return _error(503, "stopping", str(e))

    @app.exception_handler(_Failed)
    async def failed(_: Request, e: _Failed) -> JSONResponse:
        # A full disk or a damaged database: the POS gets a reason it can show, and a 503
        # tells it to try again later, as for a till that is stopping.
        return _error(e.failure.status, e.failure.code, e.failure.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own refusals (a body that is not JSON, not UTF-8 or nested too deeply; an
        # unknown path) in the API's error shape instead of {"detail": ...}.
        code = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        message = ("body is not valid JSON (UTF-8 text, nested at most a few hundred levels)"
                   if e.status_code == 400 else str(e.detail))
        return _error(e.status_code, code, message)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception) -> JSONResponse:
        log.error("POS API request failed", exc_info=e)
        return _error(500, "internal", "unexpected error in the agent; details are in its log")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(key_dependency)], responses=ERRORS)

    async def print_later(result: Any) -> None:
        # async: a plain function would be run in the thread pool, for a non-blocking submit.
        try:
            rt.writer.submit(ops.print_receipt, rt, result)
        except RuntimeStopped:
            log.info("receipt of %s stays due for the next start", result.receipt)

    @v1.post("/sales", response_model=SaleOut, response_model_exclude_unset=True, tags=["sales"])
    async def record_sale(sale: SaleIn) -> Any:
        """Record a sale exactly once, award its stamps and print its loyalty receipt."""
        done = await run(ops.record_sale, sale.model_dump(exclude_none=True))
        # The answer goes out first; only then is the receipt drawn and spooled, so the POS
        # never waits for it. `out` has SaleOut's keys already: no second validation pass.
        return JSONResponse(done.out, background=BackgroundTask(print_later, done.result)
                            if done.result is not None else None)

    @v1.post("/sales/{receipt}/refund", response_model=OutcomeOut, tags=["sales"])
    async def refund(receipt: str, body: Annotated[RefundIn | None, Body()] = None) -> Any:
        """Refund a sale in full (no body) or some lines; its stamps are taken back."""
        return await run(ops.refund, receipt, body.lines if body else None)

    @v1.get("/members", response_model=MemberOut, tags=["members"])
    async def find_member(phone: Annotated[str, Query(min_length=1, max_length=32)]) -> Any:
        """Find a member by phone number (any Indonesian format)."""
        return await run(ops.member_by_phone, phone)

    @v1.post("/members", response_model=EnrolledOut, status_code=201, tags=["members"])
    async def enrol(member: MemberIn) -> Any:
        """Enrol a new member; answers with their id in `member` (and prints their card if asked)."""
        fields = member.model_dump()
        print_card = fields.pop("print_card")
        out = await run(ops.enroll, fields)
        if print_card and out.get("card"):
            out["card_job"] = await run(_queue_card, out["member"], out["card"])
        return out

    @v1.get("/members/{member_id}", response_model=MemberOut, tags=["members"])
    async def show_member(member_id: str) -> Any:
        """A member's balance, tier, card, missions, expiring stamps and redeemable rewards."""
        return await run(ops.member, member_id)

    @v1.get("/rewards", response_model=list[RewardOut], response_model_exclude_none=True, tags=["rewards"])
    async def list_rewards(member: Annotated[str | None, Query(max_length=512)] = None) -> Any:
        """The rewards catalogue; with `member`, which of them they can redeem now."""
        return await run(ops.rewards, member or None)

    @v1.post("/redemptions", response_model=OutcomeOut, status_code=201, tags=["rewards"])
    async def redeem(body: RedemptionIn) -> Any:
        """Redeem a reward for a member."""
        return await run(ops.redeem, body.member, body.reward)

    @v1.post("/claims", response_model=OutcomeOut, status_code=201, tags=["rewards"])
    async def claim(body: ClaimIn) -> Any:
        """Give a member the stamps of a receipt-claim QR, once."""
        return await run(ops.claim, body.payload, body.member)

    @v1.post("/print/{receipt}", response_model=PrintOut, status_code=202, tags=["printing"])
    async def reprint(receipt: str) -> Any:
        """Print a recorded sale's loyalty receipt again (queued)."""
        return await run(ops.reprint, receipt)

    @v1.get("/events", tags=["events"], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "server-sent events; each `data:` is one JSON event"}})
    async def events(request: Request) -> StreamingResponse:
        """A server-sent event stream of scans, sales and awards, and device changes.

        A client reconnecting with `Last-Event-ID` first gets the events it missed (the last
        50 are kept); when some are gone, or the agent restarted, a `replay_gap` event tells it
        to reload its state.
        """
        sub = _LoopSubscription(asyncio.get_running_loop())
        missed, complete = rt.hub.subscribe_since(sub, _last_id(request, boot))
        if request.headers.get("last-event-id") is None:
            missed, complete = [], True  # a first connection starts from now
        return StreamingResponse(_stream(rt, sub, boot, missed, complete), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/health", response_model=HealthOut, tags=["agent"])
    async def health(request: Request) -> Any:
        """Each device, the print queue and the outbox (events waiting for head office)."""
        report = await run(Runtime.health)
        problem = app.state.problem
        if problem is not None:
            report = {**report, "status": "degraded",
                      "problem": {"error": problem.code, "message": problem.message}}
        try:
            check_key(request)
        except _Unauthorized:
            # Without the key, health still says whether the till works, but not where its
            # devices are: a printer's or scanner's URL maps the shop's network.
            return _without_urls(report)
        return report

    app.include_router(v1)
    from .panel import add_panel

    add_panel(app, rt)
    return app


def _queue_card(rt: Runtime, member: str, payload: str) -> str | None:
    """Spool the member's card slip; None on a till without a printer."""
    if rt.print_queue is None:
        return None
    from ..agent.receipts import CAPTIONS
    from ..agent.runtime import printer_width
    from ..drivers.receipt import render_slip

    del payload  # the slip signs the card itself: one renderer for every card slip
    slip = ops.card_slip(rt, member, CAPTIONS[rt.till.config.language]["card"])
    data = render_slip(slip, width=printer_width(rt.till.config.extra))
    job = f"card-{member}-{uuid.uuid4().hex[:8]}"
    rt.print_queue.submit(job, data)
    return job


def _extra_hosts(rt: Runtime) -> list[str]:
    hosts = (rt.till.config.extra.get("api") or {}).get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError("[api] hosts must be a list of host names, e.g. [\"till1.shop.lan\"]")
    return hosts


def _without_urls(report: dict[str, Any]) -> dict[str, Any]:
    out = dict(report)
    out["devices"] = {name: {**dev, "url": ""} for name, dev in report["devices"].items()}
    out["print_queue"] = {**report["print_queue"], "printer": None}
    if report.get("tap"):
        out["tap"] = {**report["tap"], "listen": "", "printer": None}
    return out


def _last_id(request: Request, boot: str) -> int | None:
    """The event id a reconnecting client saw last; None when it is from another run (or junk)."""
    raw = request.headers.get("last-event-id", "")
    run, _, n = raw.partition(".")
    return int(n) if run == boot and n.isdigit() else None


def _sse(boot: str, event: dict[str, Any]) -> str:
    # The id carries this run's token: after a restart the counter starts again at 1.
    return f"id: {boot}.{event['id']}\ndata: {json.dumps(event, ensure_ascii=False, default=str)}\n\n"


async def _stream(rt: Runtime, sub: _LoopSubscription, boot: str, missed: list[dict[str, Any]],
                  complete: bool) -> AsyncIterator[str]:
    try:
        yield "retry: 1000\n: connected\n\n"
        if not complete:
            yield f"data: {json.dumps({'type': 'replay_gap'})}\n\n"
        seen = 0
        for old in missed:
            seen = old["id"]
            yield _sse(boot, old)
        while True:
            try:
                event = await asyncio.wait_for(sub.aq.get(), HEARTBEAT)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return
            if event["id"] <= seen:
                continue  # already sent in the replay
            yield _sse(boot, event)
    finally:
        rt.hub.unsubscribe(sub)


class _Unauthorized(Exception):
    """No or a wrong API key."""


class _Unavailable(Exception):
    """The agent is stopping."""


class _Failed(Exception):
    """A write failed for a reason outside the code (disk full, read-only, damaged database)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
