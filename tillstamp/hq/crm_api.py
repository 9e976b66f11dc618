"""The staff API under /v1/crm/ (JSON; bearer tokens from `tillstamp hq user add`).

    GET    /v1/crm/members?q=             search by phone, name, member id, external id
    GET    /v1/crm/members/{id}           the member's record (the "360")
    GET    /v1/crm/overview               headline figures
    POST   /v1/crm/segments/preview       {"definition": {...}, "as_of": "YYYY-MM-DD"} -> {"count", "sample"}
    GET    /v1/crm/segments               saved and predefined segments
    GET    /v1/crm/segments/{name}        a definition and its sizes over time
    PUT    /v1/crm/segments/{name}        save (owner, marketer)
    DELETE /v1/crm/segments/{name}        forget (owner, marketer)
    GET    /v1/crm/segments/{name}/preview
    GET    /v1/crm/segments/{name}/export ?format=csv|json, written to the audit log

Only a bearer token opens these: a till's request signature is not a staff login. A store
manager sees only members enrolled at or buying at their store, and only that store's sales.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from ..sync import protocol as p
from .answers import answer_errors
from .crm import Crm, CrmConflict, Forbidden, NotFound
from .segments import SegmentError
from .service import Hq
from .staff import Principal


class Unauthorized(Exception):
    """No bearer token, or one HQ does not know."""


class PreviewRequest(BaseModel):
    """A definition to count, as of a date (default today in the store's zone)."""

    model_config = ConfigDict(extra="forbid")
    definition: dict[str, Any]
    as_of: dt.date | None = None
    sample: int = Field(20, ge=0, le=200)


class PreviewResponse(BaseModel):
    """How many members match, and the first of them by member id."""

    count: int
    sample: list[dict[str, Any]]
    as_of: dt.date


class SegmentBody(BaseModel):
    """A segment to save under the name in the path."""

    model_config = ConfigDict(extra="forbid")
    definition: dict[str, Any]
    description: str = ""


class MemberHit(BaseModel):
    """One search result."""

    member: str
    external_id: str | None
    name: str | None
    phone: str | None
    store: str | None
    tier: str | None
    balance: int


def _staff(request: Request) -> Principal:
    """The staff user a request's bearer token belongs to; Unauthorized otherwise."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a staff bearer token is required (Authorization: Bearer ...)")
    who = request.app.state.crm.principal(token.strip())
    if who is None:
        raise Unauthorized("unknown or disabled token")
    return who  # type: ignore[no-any-return]


Staff = Annotated[Principal, Depends(_staff)]


def mount_crm(app: FastAPI, hq: Hq) -> None:
    """Add the staff API and its error answers to the HQ app."""
    crm = Crm(hq)
    errors: dict[int | str, dict[str, Any]] = {s: {"model": p.ErrorBody} for s in ("401", "403", "404", "422")}

    answer_errors(app, {Unauthorized: (401, "unauthorized"), Forbidden: (403, "forbidden"),
                        NotFound: (404, "not_found"), SegmentError: (422, "invalid_segment"),
                        CrmConflict: (409, "conflict")},
                  headers={Unauthorized: {"WWW-Authenticate": "Bearer"}})
    app.state.crm = crm
    r = APIRouter(prefix="/v1/crm", tags=["crm"], responses=errors)

    @r.get("/members", response_model=list[MemberHit], summary="Search members")
    def search(who: Staff, q: Annotated[str, Query(min_length=1, max_length=100)],
               limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Any:
        return crm.search(q, who=who, limit=limit)

    @r.get("/members/{member}", summary="A member's whole record")
    def member(member: str, who: Staff) -> Any:
        return crm.member(member, who=who)

    @r.get("/overview", summary="Headline figures")
    def overview(who: Staff, as_of: dt.date | None = None) -> Any:
        return crm.figures(who=who, as_of=as_of)

    @r.post("/segments/preview", response_model=PreviewResponse, summary="Count a definition's members")
    def preview(req: PreviewRequest, who: Staff) -> Any:
        return crm.preview(req.definition, req.as_of, who=who, sample=req.sample).to_json()

    @r.get("/segments", summary="Saved and predefined segments")
    def segments(who: Staff) -> Any:
        return crm.segments()

    @r.get("/segments/{name}", summary="A segment and its sizes over time")
    def show(name: str, who: Staff) -> Any:
        return crm.show(name)

    @r.put("/segments/{name}", summary="Save a segment")
    def save(name: str, body: SegmentBody, who: Staff) -> Any:
        crm.save({**body.definition, "description": body.description}, name=name, who=who)
        return crm.show(name)

    @r.delete("/segments/{name}", summary="Forget a saved segment")
    def delete(name: str, who: Staff) -> Any:
        crm.delete(name, who=who)
        return {"deleted": name}

    @r.get("/segments/{name}/preview", response_model=PreviewResponse, summary="Count a saved segment")
    def preview_named(name: str, who: Staff, as_of: dt.date | None = None,
                      sample: Annotated[int, Query(ge=0, le=200)] = 20) -> Any:
        return crm.preview_named(name, as_of, who=who, sample=sample).to_json()

    @r.get("/segments/{name}/export", summary="Every member of a segment (audited)")
    def export(name: str, who: Staff, as_of: dt.date | None = None,
               format: Literal["csv", "json"] = "csv") -> Response:
        exp = crm.export(name, as_of, who=who)
        if format == "json":
            return JSONResponse({"name": exp.name, "as_of": exp.as_of.isoformat(),
                                 "members": [dict(zip(exp.columns, row, strict=True)) for row in exp.rows]})
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(exp.columns)
        w.writerows(exp.rows)
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{exp.name}-{exp.as_of.isoformat()}.csv"'})

    app.include_router(r)
