"""SQL for the CRM's own tables at HQ: saved segments, their daily sizes, staff users and the
audit log; and the read-model queries the staff API makes (member search, a member, figures).

A store module over an HQ store's connection (`_tx`/`_x`, so `?` placeholders work on both
backends). Schema: `SQLITE_SCHEMA` is a named migration in `store_sqlite.py`, `PG_SCHEMA` is
part of `store_pg.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class CrmConflict(Exception):
    """A name already taken (a user, a predefined segment)."""


_TABLES = (
    ("CREATE TABLE {ine}segments (name TEXT PRIMARY KEY, definition TEXT NOT NULL, description TEXT NOT NULL, "
     "created_by TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL){strict}"),
    # One row per segment and store-local day: the size last measured that day (a chart's points).
    ("CREATE TABLE {ine}segment_sizes (name TEXT NOT NULL, day TEXT NOT NULL, size {big} NOT NULL, "
     "at TEXT NOT NULL, PRIMARY KEY (name, day)){strict}"),
    ("CREATE TABLE {ine}staff_users (name TEXT PRIMARY KEY, role TEXT NOT NULL, store TEXT, "
     "token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0){strict}"),
    ("CREATE TABLE {ine}audit_log (id {serial}, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, "
     "target TEXT, detail TEXT NOT NULL){strict}"),
)
SQLITE_SCHEMA = tuple(t.format(ine="", strict=" STRICT", big="INTEGER", serial="INTEGER PRIMARY KEY AUTOINCREMENT")
                      for t in _TABLES)
PG_SCHEMA = tuple(t.format(ine="IF NOT EXISTS ", strict="", big="BIGINT", serial="BIGSERIAL PRIMARY KEY")
                  for t in _TABLES)


@dataclass(frozen=True)
class SavedSegment:
    """A segment as stored."""

    name: str
    definition: dict[str, Any]
    description: str
    created_by: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class StaffRow:
    """A staff user as stored (the token only as its hash)."""

    name: str
    role: str
    store: str | None
    created_at: str


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def _seg(r: Sequence[Any]) -> SavedSegment:
    return SavedSegment(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5])


# -- segments ----------------------------------------------------------------------------


def save_segment(store: Any, name: str, definition: dict[str, Any], description: str, actor: str | None,
                 now: dt.datetime) -> SavedSegment:
    """Create or replace a saved segment (already validated by the caller)."""
    text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    with store._tx() as c:
        store._x(c, "INSERT INTO segments(name, definition, description, created_by, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET definition = excluded.definition, "
                    "description = excluded.description, updated_at = excluded.updated_at",
                 (name, text, description, actor, _iso(now), _iso(now)))
    got = get_segment(store, name)
    assert got is not None
    return got


def get_segment(store: Any, name: str) -> SavedSegment | None:
    """A saved segment by name."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT name, definition, description, created_by, created_at, updated_at FROM segments "
                        "WHERE name = ?", (name,)).fetchone()
    return _seg(r) if r else None


def list_segments(store: Any) -> list[SavedSegment]:
    """Every saved segment by name."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT name, definition, description, created_by, created_at, updated_at "
                           "FROM segments ORDER BY name").fetchall()
    return [_seg(r) for r in rows]


def delete_segment(store: Any, name: str) -> bool:
    """Forget a saved segment (its sizes stay, for the chart); False if there was none."""
    with store._tx() as c:
        return bool(store._x(c, "DELETE FROM segments WHERE name = ?", (name,)).rowcount)


def record_size(store: Any, name: str, day: dt.date, size: int, now: dt.datetime) -> None:
    """Keep a segment's size for a store-local day (the latest measure of that day wins)."""
    with store._tx() as c:
        store._x(c, "INSERT INTO segment_sizes(name, day, size, at) VALUES (?, ?, ?, ?) ON CONFLICT(name, day) "
                    "DO UPDATE SET size = excluded.size, at = excluded.at", (name, day.isoformat(), size, _iso(now)))


def sizes(store: Any, name: str) -> list[dict[str, Any]]:
    """A segment's kept sizes, oldest day first."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT day, size FROM segment_sizes WHERE name = ? ORDER BY day", (name,)).fetchall()
    return [{"day": r[0], "size": int(r[1])} for r in rows]


# -- staff and audit ---------------------------------------------------------------------


def add_user(store: Any, name: str, role: str, scope: str | None, token_hash: str, now: dt.datetime) -> StaffRow:
    """Add a staff user; CrmConflict if the name is taken."""
    with store._tx() as c:
        if store._x(c, "SELECT 1 FROM staff_users WHERE name = ?", (name,)).fetchone():
            raise CrmConflict(f"user {name!r} already exists")
        store._x(c, "INSERT INTO staff_users(name, role, store, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                 (name, role, scope, token_hash, _iso(now)))
        _audit(store, c, "cli", "user.add", name, {"role": role, "store": scope}, now)
    return StaffRow(name, role, scope, _iso(now))


def user_by_token_hash(store: Any, token_hash: str) -> StaffRow | None:
    """The (enabled) staff user holding this token."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT name, role, store, created_at FROM staff_users WHERE token_hash = ? AND disabled = 0",
                     (token_hash,)).fetchone()
    return StaffRow(r[0], r[1], r[2], r[3]) if r else None


def list_users(store: Any) -> list[StaffRow]:
    """Every staff user by name."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT name, role, store, created_at FROM staff_users ORDER BY name").fetchall()
    return [StaffRow(r[0], r[1], r[2], r[3]) for r in rows]


def _audit(store: Any, c: Any, actor: str, action: str, target: str | None, detail: dict[str, Any],
           now: dt.datetime) -> None:
    store._x(c, "INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
             (_iso(now), actor, action, target, json.dumps(detail, sort_keys=True, ensure_ascii=False)))


def audit(store: Any, actor: str, action: str, target: str | None, detail: dict[str, Any], now: dt.datetime) -> None:
    """Append to the audit log (exports, user changes)."""
    with store._tx() as c:
        _audit(store, c, actor, action, target, detail, now)


def audit_log(store: Any, limit: int = 100) -> list[dict[str, Any]]:
    """The newest audit entries first."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT at, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?",
                        (limit,)).fetchall()
    return [{"at": r[0], "actor": r[1], "action": r[2], "target": r[3], "detail": json.loads(r[4])} for r in rows]


# -- read-model queries for staff --------------------------------------------------------

MEMBER_COLUMNS = ("member", "external_id", "name", "phone", "email", "birthday", "store", "enrolled_at",
                  "consent_whatsapp", "consent_email", "consent_sms", "balance", "tier", "badges", "first_day",
                  "last_day", "visits", "spend", "fav_category", "fav_store", "usual_hour", "usual_weekday",
                  "merged_into", "erased")
SEARCH_COLUMNS = ("member", "external_id", "name", "phone", "store", "tier", "balance")
LINE_COLUMNS = ("sale", "line", "store", "terminal", "receipt", "at_utc", "local_date", "sku", "name", "category",
                "qty", "amount", "voided")
_IN_STORE = ("(m.store = ? OR EXISTS (SELECT 1 FROM sale_lines s WHERE s.member = m.member AND s.store = ?))")


def search_members(store: Any, *, text: str, phone: str | None, scope: str | None,
                   limit: int = 20) -> list[dict[str, Any]]:
    """Members whose id, external id or phone is the query, or whose name contains it (any case)."""
    conds = ["m.member = ?", "m.external_id = ?", "lower(m.name) LIKE ? ESCAPE '\\'"]
    like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    params: list[Any] = [text, text, like]
    if phone is not None:
        conds.append("m.phone = ?")
        params.append(phone)
    sql = f"SELECT {', '.join('m.' + k for k in SEARCH_COLUMNS)} FROM crm_members m WHERE ({' OR '.join(conds)})"
    if scope is not None:
        sql += " AND " + _IN_STORE
        params += [scope, scope]
    sql += " ORDER BY m.member = ? DESC, m.name, m.member LIMIT ?"
    params += [text, limit]
    with store._tx(write=False) as c:
        rows = store._x(c, sql, params).fetchall()
    return [dict(zip(SEARCH_COLUMNS, r, strict=True)) for r in rows]


def member_row(store: Any, member: str, scope: str | None) -> dict[str, Any] | None:
    """A member's read-model row, if it exists and (for a manager) belongs to their store."""
    sql = f"SELECT {', '.join('m.' + k for k in MEMBER_COLUMNS)} FROM crm_members m WHERE m.member = ?"
    params: list[Any] = [member]
    if scope is not None:
        sql += " AND " + _IN_STORE
        params += [scope, scope]
    with store._tx(write=False) as c:
        r = store._x(c, sql, params).fetchone()
    if r is None:
        return None
    out = dict(zip(MEMBER_COLUMNS, r, strict=True))
    out["badges"] = json.loads(out["badges"] or "[]")
    return out


def member_lines(store: Any, member: str, scope: str | None, sales: int = 50) -> list[dict[str, Any]]:
    """The lines of a member's last `sales` sales (a manager sees only their store's), newest first."""
    where = "member = ?" + (" AND store = ?" if scope is not None else "")
    params: list[Any] = [member, *([scope] if scope is not None else [])]
    sql = (f"SELECT {', '.join(LINE_COLUMNS)} FROM sale_lines WHERE {where} AND sale IN "
           f"(SELECT sale FROM sale_lines WHERE {where} GROUP BY sale ORDER BY max(at_utc) DESC LIMIT ?) "
           "ORDER BY at_utc DESC, sale, line")
    with store._tx(write=False) as c:
        rows = store._x(c, sql, [*params, *params, sales]).fetchall()
    return [dict(zip(LINE_COLUMNS, r, strict=True)) for r in rows]


def figures(store: Any, day: int, scope: str | None) -> dict[str, Any]:
    """Headline figures before store-local epoch day `day`: members, active 30/90 days, sales and
    spend in the last 30 days (a manager: their store only)."""
    mscope, mparams = ("", []) if scope is None else (" AND " + _IN_STORE, [scope, scope])
    lscope, lparams = ("", []) if scope is None else (" AND store = ?", [scope])
    with store._tx(write=False) as c:
        members = int(store._x(c, "SELECT count(*) FROM crm_members m WHERE m.merged_into IS NULL "
                                  "AND m.erased = 0" + mscope, mparams).fetchone()[0])
        out: dict[str, Any] = {"members": members}
        for n in (30, 90):
            out[f"active_{n}d"] = int(store._x(
                c, "SELECT count(DISTINCT member) FROM sale_lines WHERE member IS NOT NULL AND voided = 0 "
                   "AND day >= ? AND day < ?" + lscope, [day - n, day, *lparams]).fetchone()[0])
        r = store._x(c, "SELECT count(DISTINCT sale), coalesce(sum(amount), 0) FROM sale_lines WHERE voided = 0 "
                        "AND day >= ? AND day < ?" + lscope, [day - 30, day, *lparams]).fetchone()
        out["sales_30d"], out["spend_30d"] = int(r[0]), int(r[1])
    return out
