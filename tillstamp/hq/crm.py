"""The CRM's service at HQ: segments (preview, save, export, sizes), staff users and what the
staff API reads (search, a member, figures). One object over an `Hq`; the CLI and the HTTP
router both call it, so both say the same things.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from . import crm_store, segment_sql
from .crm_store import CrmConflict, SavedSegment, StaffRow
from .segments import (
    PREDEFINED,
    All,
    AsOf,
    InStore,
    Segment,
    SegmentError,
    parse_segment,
    today_in,
)
from .service import Hq
from .staff import Principal, check_name, new_token, parse_role, token_hash

OWNER = Principal("cli", "owner")


class NotFound(LookupError):
    """No such member or segment (or not one this user may see)."""


class Forbidden(PermissionError):
    """This user's role does not allow the action."""


@dataclass(frozen=True)
class Preview:
    """A segment's size as of a date, with a sample of its members."""

    count: int
    sample: list[dict[str, Any]]
    as_of: dt.date

    def to_json(self) -> dict[str, Any]:
        """The JSON the CLI and the API print."""
        return {"count": self.count, "sample": self.sample, "as_of": self.as_of.isoformat()}


@dataclass(frozen=True)
class Export:
    """Every member of a segment as rows of `columns`."""

    name: str
    as_of: dt.date
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


class Crm:
    """Segments, staff and the staff API's reads over one HQ."""

    def __init__(self, hq: Hq):
        self.hq = hq
        self.store: Any = hq.store

    # -- as-of ---------------------------------------------------------------------------

    def asof(self, date: dt.date | None = None) -> AsOf:
        """The evaluation context: D (default today in the store's zone) and program figures."""
        program = self.hq.program()
        zone = program.timezone if program else "Asia/Jakarta"
        return AsOf(date or today_in(zone, self.hq.clock()), zone,
                    program.card.size if program else 10, program.expiry.months if program else 0)

    # -- segments ------------------------------------------------------------------------

    def definition(self, name: str) -> Segment:
        """A saved or predefined segment, parsed."""
        if name in PREDEFINED:
            return parse_segment({"name": name, **PREDEFINED[name]})
        saved = crm_store.get_segment(self.store, name)
        if saved is None:
            raise NotFound(f"segment {name!r} not found (see `hq segment list`)")
        return parse_segment({"name": name, "description": saved.description, **saved.definition})

    def _compiled(self, seg: Segment, asof: AsOf, who: Principal) -> segment_sql.Compiled:
        root = seg.root if who.scope is None else All((seg.root, InStore((who.scope,))))
        return segment_sql.compile_segment(root, asof, segment_sql.dialect_of(self.store))

    def preview(self, data: dict[str, Any], as_of: dt.date | None = None, *, who: Principal = OWNER,
                sample: int = 20) -> Preview:
        """Count a definition's members as of a date, with a sample; SegmentError if it is not valid."""
        seg = parse_segment(data)
        asof = self.asof(as_of)
        n, rows = segment_sql.count_and_sample(self.store, self._compiled(seg, asof, who), sample)
        return Preview(n, rows, asof.date)

    def preview_named(self, name: str, as_of: dt.date | None = None, *, who: Principal = OWNER,
                      sample: int = 20) -> Preview:
        """Preview a saved or predefined segment; an unscoped preview keeps the day's size."""
        seg = self.definition(name)
        asof = self.asof(as_of)
        n, rows = segment_sql.count_and_sample(self.store, self._compiled(seg, asof, who), sample)
        if who.scope is None:
            crm_store.record_size(self.store, name, asof.date, n, self.hq.clock())
        return Preview(n, rows, asof.date)

    def save(self, data: dict[str, Any], *, name: str | None = None, who: Principal = OWNER) -> SavedSegment:
        """Validate and save a segment under its name (replacing one of that name), then keep its size."""
        if not who.can_edit_segments:
            raise Forbidden(f"a {who.role} cannot save segments")
        seg = parse_segment({**data, **({"name": name} if name else {})})
        if seg.name is None:
            raise SegmentError("name: missing (a saved segment needs a name)")
        if seg.name in PREDEFINED:
            raise CrmConflict(f"name: {seg.name!r} is a predefined segment")
        saved = crm_store.save_segment(self.store, seg.name, seg.definition, seg.description, who.name,
                                       self.hq.clock())
        self.preview_named(seg.name, who=who, sample=0)
        return saved

    def delete(self, name: str, *, who: Principal = OWNER) -> None:
        """Forget a saved segment."""
        if not who.can_edit_segments:
            raise Forbidden(f"a {who.role} cannot delete segments")
        if not crm_store.delete_segment(self.store, name):
            raise NotFound(f"segment {name!r} not found")

    def segments(self) -> list[dict[str, Any]]:
        """Saved segments, then the predefined ones."""
        out = [{"name": s.name, "description": s.description, "definition": s.definition, "predefined": False,
                "updated_at": s.updated_at} for s in crm_store.list_segments(self.store)]
        out += [{"name": k, "description": "", "definition": v, "predefined": True, "updated_at": None}
                for k, v in PREDEFINED.items()]
        return out

    def show(self, name: str) -> dict[str, Any]:
        """A segment's definition and its kept sizes."""
        seg = self.definition(name)
        return {"name": name, "description": seg.description, "definition": seg.definition,
                "predefined": name in PREDEFINED, "sizes": crm_store.sizes(self.store, name)}

    def export(self, name: str, as_of: dt.date | None = None, *, who: Principal = OWNER) -> Export:
        """Every member of a segment (a manager: of their store), written to the audit log first."""
        seg = self.definition(name)
        asof = self.asof(as_of)
        rows = segment_sql.export_rows(self.store, self._compiled(seg, asof, who))
        now = self.hq.clock()
        crm_store.audit(self.store, who.name, "segment.export", name,
                        {"as_of": asof.date.isoformat(), "rows": len(rows), "store": who.scope}, now)
        if who.scope is None:
            crm_store.record_size(self.store, name, asof.date, len(rows), now)
        return Export(name, asof.date, segment_sql.EXPORT_COLUMNS, rows)

    def record_sizes(self, as_of: dt.date | None = None) -> dict[str, int]:
        """Measure and keep today's size of every saved and predefined segment (`hq segment sizes`)."""
        names = [s.name for s in crm_store.list_segments(self.store)] + list(PREDEFINED)
        return {n: self.preview_named(n, as_of, sample=0).count for n in names}

    # -- staff ---------------------------------------------------------------------------

    def add_user(self, name: str, role: str) -> tuple[StaffRow, str]:
        """A new staff user and their bearer token (only its hash is kept)."""
        r, scope = parse_role(role)
        token = new_token()
        row = crm_store.add_user(self.store, check_name(name), r, scope, token_hash(token), self.hq.clock())
        return row, token

    def principal(self, token: str) -> Principal | None:
        """The staff user a bearer token belongs to."""
        row = crm_store.user_by_token_hash(self.store, token_hash(token))
        return Principal(row.name, row.role, row.store) if row else None

    # -- reads for staff -----------------------------------------------------------------

    def search(self, q: str, *, who: Principal = OWNER, limit: int = 20) -> list[dict[str, Any]]:
        """Members by phone (any common Indonesian form), name, member id or external id."""
        from ..loyalty.phone import PhoneError, looks_like_phone, normalize_phone

        q = q.strip()
        if not q:
            return []
        phone = None
        if looks_like_phone(q):
            try:
                phone = normalize_phone(q)
            except PhoneError:
                phone = None
        return crm_store.search_members(self.store, text=q, phone=phone, scope=who.scope, limit=limit)

    def member(self, member: str, *, who: Principal = OWNER) -> dict[str, Any]:
        """The member's whole record (`record.member_record`, the "360"); a manager gets it only for
        a member of their store, with that store's sales, rewards and claims."""
        from .record import MemberNotFound, MemberRef, member_record

        if crm_store.member_row(self.store, member, who.scope) is None:
            raise NotFound(f"member {member!r} not found")
        try:
            rec = member_record(self.store, self.hq.program(), MemberRef(member=member), self.hq.clock())
        except MemberNotFound:
            raise NotFound(f"member {member!r} not found") from None
        if who.scope is not None:
            rec["sales"] = self._store_sales(member, who.scope)
            rec["rewards"] = [r for r in rec["rewards"] if r["store"] == who.scope]
            rec["claims"] = [c for c in rec["claims"] if c["store"] == who.scope]
        return rec

    def _store_sales(self, member: str, store: str) -> list[dict[str, Any]]:
        """The member's last 50 sales at one store, in the record's shape."""
        sales: dict[str, dict[str, Any]] = {}
        for ln in crm_store.member_lines(self.store, member, store):
            s = sales.get(ln["sale"])
            if s is None:
                s = sales[ln["sale"]] = {k: ln[k] for k in ("sale", "store", "terminal", "receipt", "at_utc",
                                                             "local_date")}
                s.update(voided=bool(ln["voided"]), total=0, lines=[])
            s["total"] += int(ln["amount"])
            s["lines"].append({k: ln[k] for k in ("line", "sku", "name", "category", "qty", "amount")})
        return list(sales.values())

    def figures(self, *, who: Principal = OWNER, as_of: dt.date | None = None) -> dict[str, Any]:
        """Headline figures as of a date (a manager: their store's)."""
        asof = self.asof(as_of)
        out = crm_store.figures(self.store, asof.day, who.scope)
        out["as_of"] = asof.date.isoformat()
        if who.scope is not None:
            out["store"] = who.scope
        return out


__all__ = ["OWNER", "Crm", "CrmConflict", "Export", "Forbidden", "NotFound", "Preview", "SegmentError"]
