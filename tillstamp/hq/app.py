"""The HQ sync endpoint as an ASGI app (FastAPI, with OpenAPI at /docs and /openapi.json).

    POST /v1/enroll   one-time code -> terminal id, store, member keys, program  (unsigned)
    POST /v1/push     a batch of the terminal's events (gzip JSON)              (signed)
    POST /v1/authorize  a redemption above the offline caps, against the merged balance (signed)
    GET  /v1/pull     ?cursor=N&limit=M: a page of the change feed              (signed)
    GET  /v1/time     HQ's clock, for a till to measure its offset             (unsigned)
    /v1/crm/...       the staff API (hq/crm_api.py)                              (bearer token)
    /v1/webhooks/..., /v1/unsubscribe/...  provider callbacks (hq/webhooks.py)   (provider-signed)
    /, /login, ...    the staff dashboard and the customer's pages (hq/web/)     (sessions)

Every answer, refusals included, carries HQ's clock in `X-HQ-Time` (Unix ms).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
import zlib
from typing import TYPE_CHECKING, Any

import psycopg
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from ..apidocs import add_offline_docs
from ..sync import protocol as p
from ..sync.wire import LEDGER_TYPE
from .answers import answer_errors, error_response
from .crm_api import mount_crm
from .limits import BodyLimit, BodyTooLarge
from .service import AuthFailed, BadBatch, Hq
from .store import CursorGone, EnrollRefused, GapError, QuarantineError
from .web import mount_web
from .webhooks import mount_webhooks

if TYPE_CHECKING:
    from .web.codes import WebConfig

_LEDGER_DOC = ("What tills send: one line per event, exactly the bytes its ledger hash covers "
               "(canonical head JSON, 0x1F, canonical body JSON), then a trailer line "
               '{"members": [...], "hash": "<ledger hash of the last event>"}. Same rules as the JSON form.')

_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": p.ErrorBody} for status in ("400", "401", "403", "409")}


def _gunzip(body: bytes, encoding: str) -> bytes:
    if encoding != "gzip":
        return body
    d = zlib.decompressobj(wbits=31)
    out = d.decompress(body, p.MAX_BODY_BYTES)
    if d.unconsumed_tail:  # a decompression bomb would pass this only at our expense
        raise BadBatch(f"body inflates beyond {p.MAX_BODY_BYTES} bytes")
    return out


def create_app(hq: Hq, web: WebConfig | None = None) -> FastAPI:
    """The ASGI app serving `hq` (with the web pages configured by `web`, defaults without)."""
    app = FastAPI(title="tillstamp HQ sync", version=p.VERSION,
                  description="Push events from tills, pull the change feed. See docs/SYNC.md.",
                  docs_url=None, redoc_url=None)  # /docs from the package, not a CDN: apidocs.py
    add_offline_docs(app)

    # A body over the limit is refused before or while it streams in, never buffered; every
    # answer, refusals included, carries HQ's clock.
    app.add_middleware(BodyLimit, limit=p.MAX_BODY_BYTES, extra_headers=lambda: [
        (p.H_HQ_TIME.lower().encode(), str(int(hq.clock().timestamp() * 1000)).encode())])

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, e: BodyTooLarge) -> JSONResponse:
        return error_response(413, "too_large", str(e.detail), headers={"Connection": "close"})

    @app.exception_handler(AuthFailed)
    async def _auth(_: Request, e: AuthFailed) -> JSONResponse:
        return error_response(e.status, e.code, str(e))

    answer_errors(app, {BadBatch: (400, "bad_batch"), GapError: (409, "gap"),
                        QuarantineError: (409, "quarantined"), CursorGone: (410, "cursor_gone"),
                        EnrollRefused: (403, "enroll_refused")})

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, e: ValidationError) -> JSONResponse:
        return error_response(422, "invalid", str(e).splitlines()[0] + f" ({e.error_count()} errors)")

    @app.exception_handler(sqlite3.OperationalError)
    @app.exception_handler(psycopg.OperationalError)
    async def _busy(_: Request, e: Exception) -> JSONResponse:
        # The database is busy or away: a till should simply come back a little later.
        return error_response(503, "unavailable", f"database unavailable: {type(e).__name__}", headers={"Retry-After": "1"})

    async def signed(request: Request) -> tuple[Any, bytes]:
        # Who is asking is settled from the headers before a byte of the body is read: an
        # unsigned or unknown sender never makes HQ receive (and hold) its body.
        sender = await run_in_threadpool(hq.check_sender, request.headers)
        body = await request.body()  # BodyLimit cuts it off above MAX_BODY_BYTES
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        term = await run_in_threadpool(hq.authenticate, request.method, path, request.headers, body, sender)
        return term, body

    @app.get("/v1/time", summary="HQ's clock")
    def get_time() -> dict[str, Any]:
        now = hq.clock()
        return {"hq_time": now.isoformat(), "hq_time_ms": int(now.timestamp() * 1000)}

    @app.post("/v1/enroll", response_model=p.EnrollResponse, responses=_ERRORS, summary="Enrol a till")
    def enroll(req: p.EnrollRequest) -> p.EnrollResponse:
        return hq.enroll(req)

    @app.post("/v1/push", response_model=p.PushResponse, responses=_ERRORS, summary="Push a batch of events",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {
                      "schema": p.PushRequest.model_json_schema(ref_template="#/components/schemas/{model}")},
                  LEDGER_TYPE: {"schema": {"type": "string", "description": _LEDGER_DOC}}}}})
    async def push(request: Request) -> p.PushResponse:
        term, body = await signed(request)
        raw = _gunzip(body, request.headers.get("content-encoding", ""))
        return await run_in_threadpool(hq.push_raw, term, raw, request.headers.get("content-type", ""))

    @app.post("/v1/authorize", response_model=p.AuthorizeResponse, responses=_ERRORS,
              summary="Authorise a redemption above the offline caps against the merged balance")
    async def authorize(request: Request) -> p.AuthorizeResponse:
        term, body = await signed(request)
        req = p.AuthorizeRequest.model_validate_json(body)
        return await run_in_threadpool(hq.authorize, term, req)

    @app.get("/v1/pull", response_model=p.PullResponse, responses={**_ERRORS, "410": {"model": p.ErrorBody}},
             summary="A page of the change feed")
    async def pull(request: Request, cursor: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=1000)) -> Any:
        term, _ = await signed(request)
        return await run_in_threadpool(hq.pull, term, cursor, limit)

    mount_crm(app, hq)
    mount_webhooks(app, hq)  # provider callbacks and one-click unsubscribe (hq/webhooks.py)
    mount_web(app, app.state.crm, web)
    return app


def hq_time_ms() -> int:
    """Now in Unix milliseconds (for callers without an HQ clock)."""
    return int(time.time() * 1000)


def utc(ms: int) -> dt.datetime:
    """An aware datetime from Unix milliseconds."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
