"""The SQL of member tags at HQ (`tag_runs`, `tag_members`, `member_tags`), shared by both backends.

A refresh (`hq tags refresh`, `hq predict`) is one run: each segment's members are written by the
database itself (`INSERT … SELECT` of the segment's compiled query, no member list in Python),
then members are walked in bounded chunks: their facts are read, the new tags and hints compared
with the stored ones, and only the members whose row changed get a new row and a bumped feed
entry. The run is marked complete last; its as-of is then what tills may assume for every member
whose entry did not change (`PullResponse.tags_as_of`). What the numbers mean is decided in
`tags.py`; here are only the statements.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from ..loyalty import events as ev


def _schema(serial: str, strict: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS tag_runs (run {serial}, as_of TEXT NOT NULL, as_of_day INTEGER NOT NULL,
            at TEXT NOT NULL, segments TEXT NOT NULL, members INTEGER NOT NULL DEFAULT 0,
            changed INTEGER NOT NULL DEFAULT 0, complete INTEGER NOT NULL DEFAULT 0){strict}""",
        # One row per (member, run, tag) while a run is being computed; older runs are dropped.
        f"""CREATE TABLE IF NOT EXISTS tag_members (member TEXT NOT NULL, run INTEGER NOT NULL, tag TEXT NOT NULL,
            PRIMARY KEY (member, run, tag)){strict}""",
        "CREATE INDEX IF NOT EXISTS tag_members_run ON tag_members(run, member)",
        # What the feed carries in each member snapshot: `as_of` is the run that last changed it.
        f"""CREATE TABLE IF NOT EXISTS member_tags (member TEXT PRIMARY KEY, tags TEXT NOT NULL,
            hints TEXT NOT NULL, as_of TEXT NOT NULL, run INTEGER NOT NULL){strict}""",
    )


SQLITE_SCHEMA = _schema("INTEGER PRIMARY KEY AUTOINCREMENT", " STRICT")
PG_SCHEMA = _schema("BIGSERIAL PRIMARY KEY", "")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat()


def start_run(store: Any, as_of: dt.datetime, as_of_day: int, segments: Sequence[str], now: dt.datetime) -> int:
    """Open a refresh run (not yet visible to tills) and return its id."""
    with store._tx() as c:
        row = store._x(c, "INSERT INTO tag_runs(as_of, as_of_day, at, segments) VALUES (?, ?, ?, ?) RETURNING run",
                       (_iso(as_of), as_of_day, _iso(now), json.dumps(list(segments)))).fetchone()
        return int(row[0])


def fill_segment(store: Any, run: int, tag: str, where: str, params: Sequence[Any], *, pg: bool = False) -> int:
    """Write one segment's members for a run, in the database; returns how many."""
    with store._tx() as c:
        if pg:
            # PostgreSQL never plans INSERT … SELECT in parallel, but does CREATE TABLE … AS: the
            # segment's joined aggregates are then computed by parallel workers, as for a count.
            store._x(c, f"CREATE TEMP TABLE tag_fill ON COMMIT DROP AS SELECT m.member {where}", params)
            store._x(c, "INSERT INTO tag_members(member, run, tag) SELECT member, ?, ? FROM tag_fill", (run, tag))
        else:
            store._x(c, f"INSERT INTO tag_members(member, run, tag) SELECT m.member, ?, ? {where}",
                     (run, tag, *params))
        return int(store._x(c, "SELECT count(*) FROM tag_members WHERE run = ? AND tag = ?",
                            (run, tag)).fetchone()[0])


MEMBER_COLS = ("member", "birthday", "balance", "last_day", "tier", "erased", "merged_into")


def member_chunk(store: Any, after: str, limit: int) -> list[dict[str, Any]]:
    """The next `limit` members after `after` (by id) with the read-model facts hints need."""
    with store._tx(write=False) as c:
        rows = store._x(c, f"SELECT {', '.join(MEMBER_COLS)} FROM crm_members WHERE member > ? "
                           "ORDER BY member LIMIT ?", (after, limit)).fetchall()
    return [dict(zip(MEMBER_COLS, r, strict=True)) for r in rows]


def chunk_facts(store: Any, run: int, lo: str, hi: str, since_day: int, before_day: int,
                tier_since: str, tier_until: str, qualify_on: str, min_visits: int = 2) -> dict[str, dict[str, Any]]:
    """For members in (lo, hi]: their tags in this run, the SKUs bought on at least `min_visits`
    visits in [since_day, before_day), the newest prediction's reorders, the tier measure in the
    window (tier_since, tier_until], and the stored tags row."""
    out: dict[str, dict[str, Any]] = {}

    def slot(m: str) -> dict[str, Any]:
        return out.setdefault(m, {"tags": [], "skus": [], "reorder": [], "measure": 0, "stored": None})

    with store._tx(write=False) as c:
        for m, tag in store._x(c, "SELECT member, tag FROM tag_members WHERE run = ? AND member > ? "
                                  "AND member <= ? ORDER BY member, tag", (run, lo, hi)).fetchall():
            slot(m)["tags"].append(tag)
        for m, sku, name, visits, last in store._x(
                c, "SELECT member, sku, max(name), count(DISTINCT sale), max(day) FROM sale_lines "
                   "WHERE member > ? AND member <= ? AND voided = 0 AND qty > 0 AND day >= ? AND day < ? "
                   "GROUP BY member, sku HAVING count(DISTINCT sale) >= ?",
                (lo, hi, since_day, before_day, min_visits)).fetchall():
            slot(m)["skus"].append((sku, name, int(visits), int(last)))
        for m, reorder in store._x(
                c, "SELECT member, reorder FROM predictions WHERE member > ? AND member <= ? AND run = "
                   "(SELECT max(run) FROM prediction_runs WHERE complete = 1)", (lo, hi)).fetchall():
            slot(m)["reorder"] = json.loads(reorder)
        if qualify_on == "stamps":
            kinds = sorted({*ev.EARNING_KINDS, ev.REVERSED})
            cond, kparams = store._any("kind", kinds)
            rows = store._x(c, f"SELECT member, sum(stamps) FROM events WHERE member > ? AND member <= ? "
                               f"AND {cond} AND stamps <> 0 AND at > ? AND at <= ? GROUP BY member",
                            (lo, hi, *kparams, tier_since, tier_until)).fetchall()
        else:
            rows = store._x(c, "SELECT member, sum(amount) FROM sale_lines WHERE member > ? AND member <= ? "
                               "AND voided = 0 AND at_utc > ? AND at_utc <= ? GROUP BY member",
                            (lo, hi, tier_since, tier_until)).fetchall()
        for m, measure in rows:
            slot(m)["measure"] = int(measure or 0)
        for m, tags, hints, as_of in store._x(c, "SELECT member, tags, hints, as_of FROM member_tags "
                                                 "WHERE member > ? AND member <= ?", (lo, hi)).fetchall():
            slot(m)["stored"] = (json.loads(tags), json.loads(hints), as_of)
    return out


def put_changed(store: Any, run: int, as_of: dt.datetime, rows: Sequence[tuple[str, list[str], dict[str, Any]]],
                now: dt.datetime) -> None:
    """Store the changed members' tags and hints and bump their feed entries, in one transaction."""
    if not rows:
        return
    with store._tx() as c:
        store._many(c, "INSERT INTO member_tags(member, tags, hints, as_of, run) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT(member) DO UPDATE SET tags = excluded.tags, hints = excluded.hints, "
                       "as_of = excluded.as_of, run = excluded.run",
                    [(m, json.dumps(t, ensure_ascii=False), json.dumps(h, sort_keys=True, ensure_ascii=False),
                      _iso(as_of), run) for m, t, h in rows])
        # The member's feed entry moves to the end: every till gets the new tags on its next pull.
        store._feed_members(c, [m for m, _, _ in rows], now, staged=False)


def finish_run(store: Any, run: int, members: int, changed: int) -> None:
    """Make a run's as-of the one tills may assume for unchanged members; drop older runs' rows."""
    with store._tx() as c:
        store._x(c, "UPDATE tag_runs SET complete = 1, members = ?, changed = ? WHERE run = ?",
                 (members, changed, run))
        store._x(c, "DELETE FROM tag_members WHERE run <= ?", (run,))


def latest_run(store: Any) -> dict[str, Any] | None:
    """The newest complete refresh: run, as_of, as_of_day, at, segments, members, changed."""
    with store._tx(write=False) as c:
        row = store._x(c, "SELECT run, as_of, as_of_day, at, segments, members, changed FROM tag_runs "
                          "WHERE complete = 1 ORDER BY run DESC LIMIT 1").fetchone()
    if row is None:
        return None
    return {"run": int(row[0]), "as_of": row[1], "as_of_day": int(row[2]), "at": row[3],
            "segments": json.loads(row[4]), "members": int(row[5]), "changed": int(row[6])}


def member_tags(store: Any, member: str) -> dict[str, Any] | None:
    """A member's stored tags, hints and as-of, or None."""
    with store._tx(write=False) as c:
        row = store._x(c, "SELECT tags, hints, as_of FROM member_tags WHERE member = ?", (member,)).fetchone()
    return {"tags": json.loads(row[0]), "hints": json.loads(row[1]), "as_of": row[2]} if row else None


def forget(store: Any, c: Any, member: str) -> None:
    """Inside an erasure's transaction: drop the member's tags and hints (a refresh never writes
    them again: an erased member has none)."""
    store._x(c, "DELETE FROM member_tags WHERE member = ?", (member,))
    store._x(c, "DELETE FROM tag_members WHERE member = ?", (member,))


def feed_tags(store: Any, c: Any, members: Sequence[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Inside a feed page's snapshot: the members' stored tags, and the newest complete run's as-of."""
    cond, params = store._any("member", list(members)) if members else ("1 = 0", [])
    rows = store._x(c, f"SELECT member, tags, hints, as_of FROM member_tags WHERE {cond}", params).fetchall()
    run = store._x(c, "SELECT as_of FROM tag_runs WHERE complete = 1 ORDER BY run DESC LIMIT 1").fetchone()
    return ({r[0]: {"as_of": r[3], "tags": json.loads(r[1]), "hints": json.loads(r[2])} for r in rows},
            run[0] if run else None)
