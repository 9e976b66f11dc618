"""The SQL of flows and messages, shared by both HQ backends (docs/FLOWS.md).

- `flows`: each flow's validated source, paused or not.
- `flow_messages`: one row per (flow, member, occurrence) under a unique constraint, written
  *before* any provider is called; `state` is todo -> doing -> sent | failed | unknown (or
  held_out / skipped, decided without a provider). `committed_at` is set, in its own
  transaction, just before the provider call: a row in `doing` without it was never sent.
- `flow_lease`: the scheduler's lease (one evaluating tick at a time, across processes).
- `flow_webhooks`: provider callbacks already applied, by (provider, id:status).
- `flow_tiers`: the tier each tier-flow last saw per member (to see a move up).

Functions take the HQ store (`SqlHqStore`), as `crm_store.py` does; what a row means is decided
in `scheduler.py`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..loyalty import events as ev
from ..loyalty.events import Event, derived_id
from .store_readmodel import event_tuple


def _schema(serial: str, strict: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS flows (name TEXT PRIMARY KEY, source TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 1,
            updated_at TEXT NOT NULL){strict}""",
        f"""CREATE TABLE IF NOT EXISTS flow_messages (id {serial}, flow TEXT NOT NULL, member TEXT NOT NULL,
            occurrence TEXT NOT NULL, ref TEXT NOT NULL UNIQUE, store TEXT, zone TEXT NOT NULL,
            trigger_day INTEGER NOT NULL, created_at TEXT NOT NULL, due_at TEXT NOT NULL, state TEXT NOT NULL,
            reason TEXT, channel TEXT, committed_at TEXT, provider_id TEXT, delivery TEXT,
            attempts INTEGER NOT NULL DEFAULT 0, worker TEXT, lease_until TEXT, sent_at TEXT,
            updated_at TEXT NOT NULL, error TEXT, UNIQUE (flow, member, occurrence)){strict}""",
        "CREATE INDEX IF NOT EXISTS flow_messages_due ON flow_messages(state, due_at)",
        "CREATE INDEX IF NOT EXISTS flow_messages_member ON flow_messages(member, committed_at)",
        "CREATE INDEX IF NOT EXISTS flow_messages_flow ON flow_messages(flow, created_at)",
        "CREATE INDEX IF NOT EXISTS flow_messages_provider ON flow_messages(provider_id)",
        f"""CREATE TABLE IF NOT EXISTS flow_lease (name TEXT PRIMARY KEY, holder TEXT,
            until_at TEXT){strict}""",
        f"""CREATE TABLE IF NOT EXISTS flow_webhooks (provider TEXT NOT NULL, key TEXT NOT NULL,
            at TEXT NOT NULL, PRIMARY KEY (provider, key)){strict}""",
        f"""CREATE TABLE IF NOT EXISTS flow_tiers (member TEXT NOT NULL, flow TEXT NOT NULL, tier TEXT NOT NULL,
            PRIMARY KEY (member, flow)){strict}""",
    )


SQLITE_SCHEMA = _schema("INTEGER PRIMARY KEY AUTOINCREMENT", " STRICT")
PG_SCHEMA = _schema("BIGSERIAL PRIMARY KEY", "")

MESSAGE_COLS = ("id", "flow", "member", "occurrence", "ref", "store", "zone", "trigger_day", "created_at",
                "due_at", "state", "reason", "channel", "committed_at", "provider_id", "delivery", "attempts",
                "sent_at", "error")
CLAIM_COLS = ("id", "flow", "member", "occurrence", "ref", "store", "zone", "trigger_day")
CONTACT_COLS = ("member", "name", "phone", "email", "balance", "tier", "store", "consent_whatsapp",
                "consent_email", "consent_sms", "erased", "merged_into")
_SENDING = "('doing', 'sent', 'unknown')"
_DELIVERY = {"sent": 1, "delivered": 2, "read": 3}


def ts(t: dt.datetime) -> str:
    """A UTC time in one fixed-width form, so text comparison is time order."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pg(store: Any) -> bool:
    return type(store).__name__ == "PgHqStore"


# -- flows ---------------------------------------------------------------------------------


def put_flow(store: Any, name: str, source: dict[str, Any], now: dt.datetime) -> int:
    """Create or replace a flow (its paused state is kept); returns its version."""
    with store._tx() as c:
        row = store._x(c, "INSERT INTO flows(name, source, paused, version, updated_at) VALUES (?, ?, 0, 1, ?) "
                          "ON CONFLICT(name) DO UPDATE SET source = excluded.source, version = flows.version + 1, "
                          "updated_at = excluded.updated_at RETURNING version",
                       (name, json.dumps(source, sort_keys=True, ensure_ascii=False), ts(now))).fetchone()
    return int(row[0])


def flows(store: Any) -> list[dict[str, Any]]:
    """Every flow: name, source, paused, version, updated_at."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT name, source, paused, version, updated_at FROM flows ORDER BY name").fetchall()
    return [{"name": r[0], "source": json.loads(r[1]), "paused": bool(r[2]), "version": int(r[3]),
             "updated_at": r[4]} for r in rows]


def set_paused(store: Any, name: str, paused: bool, now: dt.datetime) -> bool:
    """Pause or resume a flow; False if there is none of that name."""
    with store._tx() as c:
        return bool(store._x(c, "UPDATE flows SET paused = ?, updated_at = ? WHERE name = ?",
                             (int(paused), ts(now), name)).rowcount)


# -- the scheduler's lease -------------------------------------------------------------------


def take_lease(store: Any, holder: str, now: dt.datetime, until: dt.datetime) -> bool:
    """Take (or renew) the scheduler's lease; False while another holder's lease runs. One
    conditional UPDATE of one row: two processes racing for it are serialised by its row lock."""
    with store._tx() as c:
        store._x(c, "INSERT INTO flow_lease(name, holder, until_at) VALUES ('scheduler', NULL, NULL) "
                    "ON CONFLICT(name) DO NOTHING")
        n = store._x(c, "UPDATE flow_lease SET holder = ?, until_at = ? WHERE name = 'scheduler' AND "
                        "(holder IS NULL OR until_at <= ? OR holder = ?)",
                     (holder, ts(until), ts(now), holder)).rowcount
    return n == 1


def release_lease(store: Any, holder: str) -> None:
    """Give the lease back (only if still ours)."""
    with store._tx() as c:
        store._x(c, "UPDATE flow_lease SET holder = NULL, until_at = NULL WHERE name = 'scheduler' AND holder = ?",
                 (holder,))


# -- evaluating triggers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A member a trigger selected, with the value its occurrence key is made of."""

    member: str
    store: str | None
    value: Any
    extra: Any = None


def candidates(store: Any, cond: str, params: Sequence[Any], select: str = "NULL, NULL",
               join: str = "") -> list[Candidate]:
    """Members of `crm_members m` (live, not merged) matching `cond`, with two selected values."""
    sql = (f"SELECT m.member, m.store, {select} FROM crm_members m {join} "
           f"WHERE m.merged_into IS NULL AND m.erased = 0 AND {cond}")
    with store._tx(write=False) as c:
        rows = store._x(c, sql, params).fetchall()
    return [Candidate(r[0], r[1], r[2], r[3]) for r in rows]


def member_stores(store: Any) -> list[str | None]:
    """Every store members belong to (for grouping them by zone)."""
    with store._tx(write=False) as c:
        return [r[0] for r in store._x(c, "SELECT DISTINCT store FROM crm_members").fetchall()]


def recent_members(store: Any, flow: str, since: dt.datetime) -> set[str]:
    """Members with a message of this flow created since `since` (for `once_per`)."""
    with store._tx(write=False) as c:
        return {r[0] for r in store._x(c, "SELECT DISTINCT member FROM flow_messages WHERE flow = ? AND "
                                          "created_at >= ?", (flow, ts(since))).fetchall()}


def seen_tiers(store: Any, flow: str) -> dict[str, str]:
    """The tier a tier flow last saw per member."""
    with store._tx(write=False) as c:
        return dict(store._x(c, "SELECT member, tier FROM flow_tiers WHERE flow = ?", (flow,)).fetchall())


def queue(store: Any, rows: Sequence[tuple[Any, ...]], tiers: Sequence[tuple[str, str, str]] = ()) -> int:
    """Insert due messages (flow, member, occurrence, ref, store, zone, trigger_day, created_at, due_at,
    state, reason, updated_at); a key already held is left alone. Returns how many are new.
    `tiers` (member, flow, tier) are remembered in the same transaction."""
    cols = ("flow", "member", "occurrence", "ref", "store", "zone", "trigger_day", "created_at", "due_at",
            "state", "reason", "updated_at")
    n = 0
    with store._tx() as c:
        if rows and _pg(store):
            types = ("text", "text", "text", "text", "text", "text", "int", "text", "text", "text", "text", "text")
            cols_data = [list(col) for col in zip(*rows, strict=True)]
            n = store._x(c, f"INSERT INTO flow_messages({', '.join(cols)}) SELECT * FROM unnest("
                            + ", ".join(f"?::{t}[]" for t in types) + ") ON CONFLICT DO NOTHING",
                         cols_data).rowcount
        elif rows:
            c.executemany(f"INSERT INTO flow_messages({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                          "ON CONFLICT DO NOTHING", rows)
            n = c.rowcount
        store._many(c, "INSERT INTO flow_tiers(member, flow, tier) VALUES (?, ?, ?) ON CONFLICT(member, flow) "
                       "DO UPDATE SET tier = excluded.tier", tiers)
    return int(n)


# -- sending -----------------------------------------------------------------------------------


def recover_stalled(store: Any, now: dt.datetime) -> tuple[int, int]:
    """Rows left in `doing` by a worker whose lease ran out: back to `todo` if no provider was
    called yet (no `committed_at`), else `unknown` (it may have left; never resent).
    Returns (requeued, unknown)."""
    with store._tx() as c:
        back = store._x(c, "UPDATE flow_messages SET state = 'todo', worker = NULL, lease_until = NULL, "
                           "updated_at = ? WHERE state = 'doing' AND committed_at IS NULL AND lease_until < ?",
                        (ts(now), ts(now))).rowcount
        lost = store._x(c, "UPDATE flow_messages SET state = 'unknown', reason = 'stalled', worker = NULL, "
                           "updated_at = ? WHERE state = 'doing' AND committed_at IS NOT NULL AND lease_until < ?",
                        (ts(now), ts(now))).rowcount
    return int(back), int(lost)


def claim(store: Any, worker: str, now: dt.datetime, lease_until: dt.datetime, limit: int) -> list[dict[str, Any]]:
    """Take up to `limit` due `todo` messages for this worker (`doing`). PostgreSQL: rows
    another worker holds are skipped (SKIP LOCKED), never waited for or taken twice; SQLite:
    the write transaction (BEGIN IMMEDIATE) makes the claim atomic."""
    lock = " FOR UPDATE SKIP LOCKED" if _pg(store) else ""
    with store._tx() as c:
        rows = store._x(c, "UPDATE flow_messages SET state = 'doing', worker = ?, lease_until = ?, "
                           "attempts = attempts + 1, updated_at = ? WHERE id IN (SELECT id FROM flow_messages "
                           f"WHERE state = 'todo' AND due_at <= ? ORDER BY due_at, id LIMIT ?{lock}) "
                           f"RETURNING {', '.join(CLAIM_COLS)}",
                        (worker, ts(lease_until), ts(now), ts(now), limit)).fetchall()
    return sorted((dict(zip(CLAIM_COLS, r, strict=True)) for r in rows), key=lambda d: int(d["id"]))


@dataclass(frozen=True)
class Decision:
    """What the sender decided for a claimed message before any provider call."""

    id: int
    state: str  # 'commit' (send on `channel`), 'todo' (wait until `due_at`), 'skipped', 'failed'
    reason: str | None = None
    channel: str | None = None
    due_at: dt.datetime | None = None
    error: str | None = None


def contacts_and_caps(store: Any, c: Any, members: Sequence[str], since: dt.datetime
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Inside `decide`'s transaction: each member's contact row (locked on PostgreSQL, so two
    workers deciding for one member take turns) and how many messages are committed to them since."""
    if not members:
        return {}, {}
    cond, params = store._any("member", list(members))
    lock = " ORDER BY member FOR UPDATE" if _pg(store) else ""
    rows = store._x(c, f"SELECT {', '.join(CONTACT_COLS)} FROM crm_members WHERE {cond}{lock}", params).fetchall()
    contacts = {r[0]: dict(zip(CONTACT_COLS, r, strict=True)) for r in rows}
    counts = dict(store._x(c, f"SELECT member, count(*) FROM flow_messages WHERE {cond} AND committed_at >= ? "
                              f"AND state IN {_SENDING} GROUP BY member", [*params, ts(since)]).fetchall())
    return contacts, {k: int(v) for k, v in counts.items()}


def apply_decisions(store: Any, c: Any, worker: str, decisions: Sequence[Decision], now: dt.datetime) -> set[int]:
    """Write decisions in `decide`'s transaction; returns the ids committed to be sent (a row
    no longer ours, e.g. recovered after our lease ran out, is left alone and not sent)."""
    committed: set[int] = set()
    by_channel: dict[str, list[int]] = {}
    later: list[tuple[Any, ...]] = []
    done: list[tuple[Any, ...]] = []
    for d in decisions:
        if d.state == "commit":
            assert d.channel is not None
            by_channel.setdefault(d.channel, []).append(d.id)
        elif d.state == "todo":
            assert d.due_at is not None
            later.append((ts(d.due_at), d.reason, ts(now), d.id, worker))
        else:
            done.append((d.state, d.reason, d.error, ts(now), d.id, worker))
    # One statement per channel, not per message; RETURNING says which rows were still ours.
    for channel, ids in sorted(by_channel.items()):
        cond, params = store._any("id", ids)
        rows = store._x(c, f"UPDATE flow_messages SET channel = ?, committed_at = ?, updated_at = ? WHERE {cond} "
                           "AND state = 'doing' AND worker = ? RETURNING id",
                        [channel, ts(now), ts(now), *params, worker]).fetchall()
        committed.update(int(r[0]) for r in rows)
    store._many(c, "UPDATE flow_messages SET state = 'todo', due_at = ?, reason = ?, worker = NULL, "
                   "lease_until = NULL, updated_at = ? WHERE id = ? AND state = 'doing' AND worker = ?", later)
    store._many(c, "UPDATE flow_messages SET state = ?, reason = ?, error = ?, worker = NULL, updated_at = ? "
                   "WHERE id = ? AND state = 'doing' AND worker = ?", done)
    return committed


def record_outcome(store: Any, msg_id: int, worker: str, state: str, now: dt.datetime, *,
                   provider_id: str | None = None, error: str | None = None) -> bool:
    """After the provider call: sent, failed or unknown (only if the row is still ours)."""
    with store._tx() as c:
        return bool(store._x(c, "UPDATE flow_messages SET state = ?, provider_id = ?, error = ?, sent_at = ?, "
                                "worker = NULL, updated_at = ? WHERE id = ? AND state = 'doing' AND worker = ?",
                             (state, provider_id or None, error, ts(now) if state == "sent" else None, ts(now),
                              msg_id, worker)).rowcount)


def record_sent(store: Any, worker: str, sent: Sequence[tuple[int, str]], now: dt.datetime) -> None:
    """Record messages the provider accepted, (id, provider id) each, in one transaction."""
    if not sent:
        return
    with store._tx() as c:
        store._many(c, "UPDATE flow_messages SET state = 'sent', provider_id = ?, sent_at = ?, worker = NULL, "
                       "updated_at = ? WHERE id = ? AND state = 'doing' AND worker = ?",
                    [(pid or None, ts(now), ts(now), mid, worker) for mid, pid in sent])


def requeue(store: Any, msg_id: int, worker: str, due_at: dt.datetime, now: dt.datetime, error: str,
            max_attempts: int) -> bool:
    """The provider said nothing was sent: back to `todo` for later (no longer committed), or
    `failed` after `max_attempts` claims. True if queued again."""
    with store._tx() as c:
        row = store._x(c, "UPDATE flow_messages SET state = CASE WHEN attempts >= ? THEN 'failed' ELSE 'todo' END, "
                          "channel = NULL, committed_at = NULL, due_at = ?, error = ?, worker = NULL, "
                          "lease_until = NULL, updated_at = ? WHERE id = ? AND state = 'doing' AND worker = ? "
                          "RETURNING state", (max_attempts, ts(due_at), error, ts(now), msg_id, worker)).fetchone()
    return row is not None and row[0] == "todo"


# -- webhooks and consent ------------------------------------------------------------------------


def first_time(store: Any, provider: str, key: str, now: dt.datetime) -> bool:
    """Remember a provider callback; False if it was applied before (a retry or a replay)."""
    with store._tx() as c:
        return bool(store._x(c, "INSERT INTO flow_webhooks(provider, key, at) VALUES (?, ?, ?) "
                                "ON CONFLICT DO NOTHING", (provider, key, ts(now))).rowcount)


def settle(store: Any, *, ref: str | None, provider_id: str | None, status: str, now: dt.datetime,
           error: str | None = None) -> dict[str, Any] | None:
    """Apply a provider status to its message (found by our ref, else the provider's id):
    an `unknown` (or in-flight) message becomes `sent` or `failed`; later statuses
    (delivered, read) are kept in `delivery`. Returns the message's member and channel."""
    if ref:
        where, key = "ref = ?", ref
    elif provider_id:
        where, key = "provider_id = ?", provider_id
    else:
        return None
    with store._tx() as c:
        row = store._x(c, f"SELECT id, member, channel, state, delivery FROM flow_messages WHERE {where}",
                       (key,)).fetchone()
        if row is None:
            return None
        msg_id, member, channel, state = int(row[0]), row[1], row[2], row[3]
        if _DELIVERY.get(row[4] or "", 0) > _DELIVERY.get(status, 0):
            status = row[4]  # statuses arrive out of order: "delivered" after "read" keeps "read"
        if status == "failed":
            if state in ("unknown", "doing", "sent"):
                store._x(c, "UPDATE flow_messages SET state = 'failed', delivery = 'failed', error = ?, "
                            "updated_at = ? WHERE id = ?", (error, ts(now), msg_id))
        else:
            new = "sent" if state in ("unknown", "doing", "sent") else state
            store._x(c, "UPDATE flow_messages SET state = ?, delivery = ?, provider_id = coalesce(provider_id, ?), "
                        "sent_at = coalesce(sent_at, ?), updated_at = ? WHERE id = ?",
                     (new, status, provider_id, ts(now), ts(now), msg_id))
    return {"id": msg_id, "member": member, "channel": channel}


def members_by_phone(store: Any, phone: str) -> list[str]:
    """Live members with this E.164 phone."""
    with store._tx(write=False) as c:
        return [r[0] for r in store._x(c, "SELECT member FROM crm_members WHERE phone = ? AND merged_into IS NULL "
                                          "AND erased = 0 ORDER BY member", (phone,)).fetchall()]


def withdraw_consent(store: Any, member: str, channel: str, cause: str, now: dt.datetime) -> bool:
    """Write HQ's own `member.consent` event (channel withdrawn) and fold it into the read model
    and the feed in one transaction, so the member record shows it at once and every till gets
    it on its next pull. The event id comes from the cause: a replay writes nothing. Returns
    whether an event was written."""
    if channel not in ev.CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    with store._tx() as c:
        row = store._x(c, "SELECT consent_whatsapp, consent_email, consent_sms FROM crm_members WHERE member = ?",
                       (member,)).fetchone()
        current = dict(zip(("whatsapp", "email", "sms"), (bool(v) for v in row), strict=True)) if row else {}
        if not current.get(channel):
            return False  # nothing to withdraw: no event
        # The id names the cause and the member's history so far: a replay of the same cause
        # writes nothing, a withdrawal after a later re-consent is a new event.
        n = store._x(c, "SELECT count(*) FROM events WHERE member = ?", (member,)).fetchone()[0]
        e = Event(id=derived_id("consent.withdrawn", member, channel, cause, str(n)), kind=ev.CONSENT, at=now,
                  member=member, stamps=0, ref=None,
                  # the whole map, as tills write it (their projection reads `consent`), and
                  # which channel changed and why
                  body={"consent": {**current, channel: False}, "channel": channel, "granted": False,
                        "source": cause})
        store._insert_hq_event(c, e)
        store._crm_after_ingest(c, [event_tuple(e.with_position(seq=0, terminal="HQ", store="HQ"))], [], [])
        store._feed_members(c, [member], now, staged=False)
    return True


# -- reading -------------------------------------------------------------------------------------


def member_messages(store: Any, member: str) -> list[dict[str, Any]]:
    """A member's messages, oldest first."""
    with store._tx(write=False) as c:
        rows = store._x(c, f"SELECT {', '.join(MESSAGE_COLS)} FROM flow_messages WHERE member = ? ORDER BY id",
                        (member,)).fetchall()
    return [dict(zip(MESSAGE_COLS, r, strict=True)) for r in rows]


def messages(store: Any, flow: str | None = None) -> list[dict[str, Any]]:
    """Every message (of a flow), oldest first (tests, exports)."""
    where, params = ("WHERE flow = ?", (flow,)) if flow else ("", ())
    with store._tx(write=False) as c:
        rows = store._x(c, f"SELECT {', '.join(MESSAGE_COLS)} FROM flow_messages {where} ORDER BY id",
                        params).fetchall()
    return [dict(zip(MESSAGE_COLS, r, strict=True)) for r in rows]


def state_counts(store: Any, flow: str | None = None) -> dict[str, int]:
    """How many messages are in each state."""
    where, params = ("WHERE flow = ?", (flow,)) if flow else ("", ())
    with store._tx(write=False) as c:
        return {r[0]: int(r[1]) for r in store._x(c, f"SELECT state, count(*) FROM flow_messages {where} "
                                                     "GROUP BY state", params).fetchall()}


def outcome_rows(store: Any, flow: str, window: int) -> list[tuple[str, int, int]]:
    """For a flow's decided messages: (group, visits, spend) where group is 'held_out' or
    'treated' and visits/spend count non-voided sales in the `window` days after the trigger day."""
    with store._tx(write=False) as c:
        rows = store._x(c, "SELECT f.state, (SELECT count(DISTINCT s.sale) FROM sale_lines s WHERE s.member = f.member "
                           "AND s.voided = 0 AND s.day > f.trigger_day AND s.day <= f.trigger_day + ?), "
                           "(SELECT coalesce(sum(s.amount), 0) FROM sale_lines s WHERE s.member = f.member "
                           "AND s.voided = 0 AND s.day > f.trigger_day AND s.day <= f.trigger_day + ?) "
                           "FROM flow_messages f WHERE f.flow = ? AND f.state NOT IN ('todo', 'doing')",
                        (window, window, flow)).fetchall()
    return [("held_out" if r[0] == "held_out" else "treated", int(r[1]), int(r[2])) for r in rows]
