"""SQL for the web pages at HQ: staff passwords, sessions, one-time codes, the dashboard's
figures, and the loyalty events HQ itself writes for a customer (a claim made on the phone,
an enrolment, a consent change).

A store module over an HQ store's connection (`_tx`/`_x`, so `?` placeholders work on both
backends). Schema: `SQLITE_SCHEMA` is a named migration in `store_sqlite.py`, `PG_SCHEMA` is
part of `store_pg.SCHEMA`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...loyalty import events as ev
from ...loyalty.events import Event, canonical
from ..store import EVENT_COLS, HQ_TERMINAL

_TABLES = (
    # argon2 hashes of staff passwords; the user itself lives in staff_users (crm_store.py).
    "CREATE TABLE {ine}web_passwords (name TEXT PRIMARY KEY, hash TEXT NOT NULL, updated_at TEXT NOT NULL){strict}",
    # A session is known by the SHA-256 of its cookie; kind 'staff' (subject: user) or 'member' (subject: phone).
    ("CREATE TABLE {ine}web_sessions (id_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, "
     "csrf TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL){strict}"),
    # One live one-time code per phone: its hash, tries used, expiry.
    ("CREATE TABLE {ine}otp_codes (phone TEXT PRIMARY KEY, code_hash TEXT NOT NULL, tries INTEGER NOT NULL, "
     "created_at TEXT NOT NULL, expires_at TEXT NOT NULL){strict}"),
    # Covers the stamp totals of a period (issued, redeemed) per kind and time, with the store.
    # SQLite only: PostgreSQL reads them from `events_stamps_by_at` (store_pg.py), one index
    # entry less for every event a till pushes.
    "CREATE INDEX {ine}events_kind_at ON events(kind, at, store, stamps)",
    # Covers the overview's per-day figures over a window of days, so they read the window
    # from the index alone instead of scanning every line of every day (docs/DASHBOARD.md).
    "CREATE INDEX {ine}sale_lines_day_cover ON sale_lines(day, store, voided, line, member, amount)",
    # "Has this member bought at this store?" in one index probe: a store manager's member
    # counts, search and 360 ask it for every member they might see.
    "CREATE INDEX {ine}sale_lines_member_store ON sale_lines(member, store)",
)
SQLITE_SCHEMA = tuple(t.format(ine="", strict=" STRICT") for t in _TABLES)
PG_SCHEMA = tuple(t.format(ine="IF NOT EXISTS ", strict="") for t in _TABLES if "events_kind_at" not in t)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


@dataclass(frozen=True)
class SessionRow:
    """A live session."""

    kind: str
    subject: str
    csrf: str
    expires_at: str


@dataclass(frozen=True)
class Login:
    """A staff user with a password: what a login checks."""

    name: str
    role: str
    store: str | None
    password_hash: str


# -- staff passwords and sessions --------------------------------------------------------


def set_password(store: Any, name: str, password_hash: str, now: dt.datetime) -> None:
    """Set (or replace) a staff user's password hash."""
    with store._tx() as c:
        store._x(c, "INSERT INTO web_passwords(name, hash, updated_at) VALUES (?, ?, ?) ON CONFLICT(name) "
                    "DO UPDATE SET hash = excluded.hash, updated_at = excluded.updated_at",
                 (name, password_hash, _iso(now)))


def login_of(store: Any, name: str) -> Login | None:
    """An enabled staff user and their password hash, if they have one."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT u.name, u.role, u.store, p.hash FROM staff_users u JOIN web_passwords p "
                        "ON p.name = u.name WHERE u.name = ? AND u.disabled = 0", (name,)).fetchone()
    return Login(r[0], r[1], r[2], r[3]) if r else None


def staff_user(store: Any, name: str) -> tuple[str, str | None] | None:
    """(role, store) of an enabled staff user."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT role, store FROM staff_users WHERE name = ? AND disabled = 0", (name,)).fetchone()
    return (r[0], r[1]) if r else None


def create_session(store: Any, id_hash: str, kind: str, subject: str, csrf: str, now: dt.datetime,
                   expires: dt.datetime) -> None:
    """Keep a new session (and drop expired ones)."""
    with store._tx() as c:
        store._x(c, "DELETE FROM web_sessions WHERE expires_at < ?", (_iso(now),))
        store._x(c, "INSERT INTO web_sessions(id_hash, kind, subject, csrf, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (id_hash, kind, subject, csrf, _iso(now), _iso(expires)))


def session(store: Any, id_hash: str, now: dt.datetime) -> SessionRow | None:
    """A session that has not expired."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT kind, subject, csrf, expires_at FROM web_sessions WHERE id_hash = ? "
                        "AND expires_at > ?", (id_hash, _iso(now))).fetchone()
    return SessionRow(r[0], r[1], r[2], r[3]) if r else None


def delete_session(store: Any, id_hash: str) -> None:
    """End a session."""
    with store._tx() as c:
        store._x(c, "DELETE FROM web_sessions WHERE id_hash = ?", (id_hash,))


def delete_sessions_of(store: Any, kind: str, subject: str) -> None:
    """End every session of a subject (after an erasure)."""
    with store._tx() as c:
        store._x(c, "DELETE FROM web_sessions WHERE kind = ? AND subject = ?", (kind, subject))


# -- one-time codes ----------------------------------------------------------------------


def put_code(store: Any, phone: str, code_hash: str, now: dt.datetime, expires: dt.datetime) -> None:
    """Keep a new code for a phone (replacing the one before, and its tries)."""
    with store._tx() as c:
        store._x(c, "INSERT INTO otp_codes(phone, code_hash, tries, created_at, expires_at) VALUES (?, ?, 0, ?, ?) "
                    "ON CONFLICT(phone) DO UPDATE SET code_hash = excluded.code_hash, tries = 0, "
                    "created_at = excluded.created_at, expires_at = excluded.expires_at",
                 (phone, code_hash, _iso(now), _iso(expires)))


def try_code(store: Any, phone: str, code_hash: str, now: dt.datetime, max_tries: int) -> bool:
    """Spend one try on a phone's code: True (and the code is used up) when it matches, is
    live and has tries left. The try is counted in the same transaction, so guesses in
    parallel still get only `max_tries` in all."""
    with store._tx() as c:
        r = store._x(c, "UPDATE otp_codes SET tries = tries + 1 WHERE phone = ? AND expires_at > ? AND tries < ? "
                        "RETURNING code_hash", (phone, _iso(now), max_tries)).fetchone()
        if r is None or r[0] != code_hash:
            return False
        store._x(c, "DELETE FROM otp_codes WHERE phone = ?", (phone,))
        return True


# -- members as the customer's pages see them --------------------------------------------


def member_by_phone(store: Any, phone: str) -> str | None:
    """The live member holding a phone number (not merged away, not erased)."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT member FROM crm_members WHERE phone = ? AND merged_into IS NULL AND erased = 0 "
                        "ORDER BY enrolled_at, member LIMIT 1", (phone,)).fetchone()
    return r[0] if r else None


def profile(store: Any, member: str) -> dict[str, Any] | None:
    """A member's profile as HQ holds it (`members`)."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT id, phone, name, email, birthday, origin, enrolled_at FROM members WHERE id = ?",
                     (member,)).fetchone()
    return dict(zip(("id", "phone", "name", "email", "birthday", "origin", "enrolled_at"), r, strict=True)) if r else None


def event_exists(store: Any, event_id: str) -> bool:
    """True when HQ holds an event with this id (from any till or from HQ)."""
    with store._tx(write=False) as c:
        return store._x(c, "SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None


def sale_of_receipt(store: Any, store_id: str, terminal: str, receipt: str) -> dict[str, Any] | None:
    """The sale event a till recorded for a receipt (body, when HQ has it), newest first."""
    with store._tx(write=False) as c:
        r = store._x(c, "SELECT id, body FROM events WHERE kind = ? AND store = ? AND terminal = ? AND ref = ? "
                        "ORDER BY gseq DESC LIMIT 1", (ev.SALE, store_id, terminal, receipt)).fetchone()
    return {"id": r[0], "body": json.loads(r[1])} if r else None


def refunded_of(store: Any, store_id: str, terminal: str, receipt: str) -> bool:
    """True when the till recorded a refund for the receipt."""
    with store._tx(write=False) as c:
        return store._x(c, "SELECT 1 FROM events WHERE kind = ? AND store = ? AND terminal = ? AND ref = ?",
                        (ev.REFUNDED, store_id, terminal, receipt)).fetchone() is not None


def append_hq_events(store: Any, events: Sequence[Event], shop: str, now: dt.datetime,
                     pii: Sequence[dict[str, Any]] = ()) -> list[bool]:
    """Write events of HQ's own (terminal `HQ`, store `shop`) with the PII rows they need, in one
    transaction with the balances, the read model and the feed; returns, per event, whether it
    was new. An id HQ already holds (the same claim made at a till) is kept once."""
    with store._tx() as c:
        added: list[Event] = []
        flags: list[bool] = []
        for e in events:
            # Taking the counter first serialises HQ writers, so the check below cannot race.
            seq = store._bump(c, "hq")
            if store._x(c, "SELECT 1 FROM events WHERE id = ?", (e.id,)).fetchone():
                flags.append(False)
                continue
            placed = e.with_position(seq=seq, terminal=HQ_TERMINAL, store=shop)
            w = placed.to_wire()
            digest = hashlib.sha256(canonical(w)).hexdigest()
            store._x(c, f"INSERT INTO events({', '.join(EVENT_COLS)}) VALUES ({', '.join('?' * len(EVENT_COLS))})",
                     (placed.id, placed.terminal, placed.store, placed.seq, placed.kind, placed.member, w["at"],
                      placed.stamps, placed.ref, canonical(placed.body).decode(), digest))
            if placed.member is not None and placed.stamps:
                store._x(c, "INSERT INTO balances(member, balance) VALUES (?, ?) ON CONFLICT(member) "
                            "DO UPDATE SET balance = balances.balance + excluded.balance",
                         (placed.member, placed.stamps))
            added.append(placed)
            flags.append(True)
        for m in pii:
            store._x(c, "INSERT INTO members(id, phone, name, email, birthday, origin, enrolled_at, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
                     (m["id"], m.get("phone"), m.get("name"), m.get("email"), m.get("birthday"), "hq",
                      m.get("enrolled_at"), _iso(now)))
        if added:
            store._crm_after_ingest(c, [tuple(e.to_wire()[k] if k != "body" else canonical(e.body).decode()
                                              for k in EVENT_COLS[:10]) for e in added], [],
                                    [m["id"] for m in pii])
            store._feed_members(c, sorted({e.member for e in added if e.member}), now, staged=False)
    return flags


# -- the dashboard's figures --------------------------------------------------------------


def _scope(scope: str | None, column: str = "store") -> tuple[str, list[Any]]:
    return ("", []) if scope is None else (f" AND {column} = ?", [scope])


def daily(store: Any, first_day: int, end_day: int, scope: str | None) -> list[dict[str, Any]]:
    """Per store-local day in [first_day, end_day): visits (distinct non-voided sales), sales
    (amount), member visits, and new members."""
    from .store_daily import daily_sales

    # The sales side comes from the totals kept per store, day and till (store_daily.py): a
    # few rows per day, whatever the number of lines.
    by_day = daily_sales(store, first_day, end_day, scope)
    mscope, mparams = _scope(scope)
    with store._tx(write=False) as c:
        new = dict(store._x(c, "SELECT enrolled_day, count(*) FROM crm_members WHERE enrolled_day >= ? "
                               "AND enrolled_day < ? AND merged_into IS NULL" + mscope + " GROUP BY enrolled_day",
                            [first_day, end_day, *mparams]).fetchall())
    return [{"day": d, "visits": by_day.get(d, (0, 0, 0))[0], "sales": by_day.get(d, (0, 0, 0))[1],
             "member_visits": by_day.get(d, (0, 0, 0))[2], "new_members": int(new.get(d, 0))}
            for d in range(first_day, end_day)]


def member_counts(store: Any, first_day: int, end_day: int, scope: str | None) -> dict[str, int]:
    """Members (not merged away, not erased; a store's: enrolled or buying there) and members
    with a non-voided sale in [first_day, end_day)."""
    mscope, mparams = ("", []) if scope is None else (
        " AND (m.store = ? OR EXISTS (SELECT 1 FROM sale_lines s WHERE s.member = m.member AND s.store = ?))",
        [scope, scope])
    lscope, lparams = _scope(scope)
    with store._tx(write=False) as c:
        members = store._x(c, "SELECT count(*) FROM crm_members m WHERE m.merged_into IS NULL AND m.erased = 0"
                              + mscope, mparams).fetchone()[0]
        if scope is None:
            # A member's last non-voided sale day is kept in the read model (lines of a merged
            # alias count for the survivor), so "active" is one pass over the members, not a
            # DISTINCT over every line of the window.
            # Only a member whose last sale is after the window (a clock in the past) needs a
            # look at the lines.
            active = store._x(c, "SELECT count(*) FROM crm_members m WHERE m.merged_into IS NULL AND m.last_day >= ? "
                                 "AND (m.last_day < ? OR EXISTS (SELECT 1 FROM sale_lines s WHERE s.member = m.member "
                                 "AND s.day >= ? AND s.day < ? AND s.voided = 0))",
                              [first_day, end_day, first_day, end_day]).fetchone()[0]
        else:
            active = store._x(c, "SELECT count(DISTINCT member) FROM sale_lines WHERE day >= ? AND day < ?"
                                 + lscope + " AND voided = 0 AND member IS NOT NULL",
                              [first_day, end_day, *lparams]).fetchone()[0]
    return {"members": int(members), "active": int(active)}


def stamp_totals(store: Any, since: str, until: str, scope: str | None) -> dict[str, int]:
    """Stamps issued (positive events) and redeemed (reward redemptions) with `at` in [since, until)."""
    sscope, sparams = _scope(scope)
    with store._tx(write=False) as c:
        # `stamps <> 0` changes no sum; it lets PostgreSQL read the partial index of stamp events.
        issued = store._x(c, "SELECT coalesce(sum(stamps), 0) FROM events WHERE kind IN (?, ?, ?) AND at >= ? "
                             "AND at < ? AND stamps <> 0" + sscope, [ev.EARNED, ev.CLAIMED, ev.MISSION, since, until,
                                                                     *sparams]).fetchone()[0]
        redeemed = store._x(c, "SELECT coalesce(-sum(stamps), 0) FROM events WHERE kind = ? AND at >= ? "
                               "AND at < ? AND stamps <> 0" + sscope, [ev.REDEEMED, since, until,
                                                                       *sparams]).fetchone()[0]
    return {"issued": int(issued), "redeemed": int(redeemed)}


def member_totals(store: Any, scope: str | None) -> dict[str, Any]:
    """Outstanding stamps (the liability), repeat members and members per tier."""
    where = "merged_into IS NULL"
    params: list[Any] = []
    if scope is not None:
        where += " AND store = ?"
        params = [scope]
    with store._tx(write=False) as c:
        r = store._x(c, f"SELECT coalesce(sum(balance), 0), sum(CASE WHEN visits >= 1 THEN 1 ELSE 0 END), "
                        f"sum(CASE WHEN visits >= 2 THEN 1 ELSE 0 END) FROM crm_members WHERE {where}",
                     params).fetchone()
        tiers = store._x(c, f"SELECT coalesce(tier, '-'), count(*) FROM crm_members WHERE {where} "
                            "GROUP BY coalesce(tier, '-') ORDER BY 1", params).fetchall()
    return {"outstanding": int(r[0] or 0), "buyers": int(r[1] or 0), "repeaters": int(r[2] or 0),
            "tiers": {str(t[0]): int(t[1]) for t in tiers}}


def store_ids(store: Any) -> list[str]:
    """Every store a till is enrolled in."""
    with store._tx(write=False) as c:
        return [r[0] for r in store._x(c, "SELECT DISTINCT store FROM terminals ORDER BY store").fetchall()]


def terminal_health(store: Any) -> list[dict[str, Any]]:
    """Per terminal: acked sequence, last seen, clock offset, quarantined events and alerts."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT t.id, t.store, t.acked, t.last_seen, t.clock_offset_s, t.quarantined, "
                           "(SELECT count(*) FROM quarantine q WHERE q.terminal = t.id), "
                           "(SELECT count(*) FROM alerts a WHERE a.terminal = t.id) "
                           "FROM terminals t ORDER BY t.store, t.id").fetchall()
    return [{"terminal": r[0], "store": r[1], "acked": int(r[2]), "last_seen": r[3],
             "clock_offset_s": None if r[4] is None else float(r[4]), "blocked": bool(r[5]),
             "quarantined": int(r[6]), "alerts": int(r[7])} for r in rows]


def recent_alerts(store: Any, scope: str | None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest alerts (a manager: those of their store's terminals)."""
    sql = "SELECT a.kind, a.terminal, a.member, a.detail, a.at FROM alerts a"
    params: list[Any] = []
    if scope is not None:
        sql += " JOIN terminals t ON t.id = a.terminal WHERE t.store = ?"
        params.append(scope)
    sql += " ORDER BY a.id DESC LIMIT ?"
    with store._tx(write=False) as c:
        rows = store._x(c, sql, [*params, limit]).fetchall()
    return [{"kind": r[0], "terminal": r[1], "member": r[2], "detail": json.loads(r[3]), "at": r[4]} for r in rows]


def program_versions(store: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The newest program versions and when each was published."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT version, at FROM programs ORDER BY version DESC LIMIT ?", (limit,)).fetchall()
    return [{"version": int(r[0]), "at": r[1]} for r in rows]
