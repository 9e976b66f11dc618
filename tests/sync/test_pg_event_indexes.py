"""Every index on `events` costs each pushed event an entry. HQ on PostgreSQL keeps two beside
the keys (`events_by_member`, `events_stamps_by_at`); a database made with the five they
replace loses those when HQ opens it, and the queries that read them still use an index."""

from __future__ import annotations

from typing import Any

import psycopg

from tillstamp.hq.store import open_hq_store
from tillstamp.hq.store_pg import SCHEMA

OLD = (
    "CREATE INDEX events_member ON events(member, gseq)",
    "CREATE INDEX events_tier ON events(member, kind, at, stamps) WHERE stamps <> 0",
    "CREATE INDEX events_earned ON events(member, gseq) INCLUDE (at, stamps) WHERE stamps > 0 AND member IS NOT NULL",
    ("CREATE INDEX events_stamps_at ON events(at) INCLUDE (member, gseq, stamps) "
     "WHERE stamps <> 0 AND member IS NOT NULL"),
    "CREATE INDEX events_kind_at ON events(kind, at, store, stamps)",
)
NOW = {"events_pkey", "events_id_key", "events_by_member", "events_stamps_by_at", "events_sale_ref"}


def _indexes(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'events'").fetchall()}


def test_a_fresh_database_has_the_two_indexes(pg_server: Any) -> None:
    url = pg_server.url()
    open_hq_store(url).close()
    assert _indexes(url) == NOW


def test_an_older_database_loses_the_indexes_they_replace(pg_server: Any) -> None:
    url = pg_server.url()
    with psycopg.connect(url, autocommit=True) as c:
        for sql in SCHEMA:
            if "events_by_member" not in sql and "events_stamps_by_at" not in sql and "DROP INDEX" not in sql:
                c.execute(sql)
        for sql in OLD:
            c.execute(sql)
    assert _indexes(url) == (NOW - {"events_by_member", "events_stamps_by_at"}) | {
        "events_member", "events_tier", "events_earned", "events_stamps_at", "events_kind_at"}
    open_hq_store(url).close()
    assert _indexes(url) == NOW
    open_hq_store(url).close()  # and again: nothing is built twice or dropped that should stay
    assert _indexes(url) == NOW


def test_a_members_tier_events_and_the_stamp_totals_are_read_through_an_index(pg_server: Any) -> None:
    url = pg_server.url()
    open_hq_store(url).close()
    with psycopg.connect(url) as c:
        c.execute("SET enable_seqscan = off")  # an empty table: ask only whether an index can serve
        tier = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT sum(e.stamps) FROM events e WHERE e.member = 'm' AND e.stamps <> 0 "
            "AND e.kind = ANY('{stamps.earned}'::text[]) AND e.at > '2026' COLLATE \"C\"").fetchall())
        totals = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT sum(stamps) FROM events WHERE kind IN ('stamps.earned') AND at >= '2026' "
            "AND at < '2027' AND stamps <> 0").fetchall())
    assert "events_by_member" in tier
    assert "events_stamps_by_at" in totals
