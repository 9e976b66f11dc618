"""HQ on PostgreSQL writes a batch's member rows in one statement (an INSERT of the new ones and
an UPDATE of the others, sharing a snapshot). A row another push commits after that snapshot is
seen by neither: it must be written again, never lost."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import psycopg

from tillstamp.hq import readmodel as rm
from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.store_pg import PgHqStore
from tillstamp.hq.store_readmodel import LIVE, TierMove

from .conftest import program_source

AT = "2026-03-02T03:00:00+00:00"


def _move(store: PgHqStore, members: list[str], stamps: int) -> TierMove:
    with store._tx() as c:
        prog = store._crm_program(c)
    assert prog is not None
    events = [(f"e-{m}", "T", "S1", 1, "stamps.earned", m, AT, stamps, None, "{}") for m in members]
    steps = rm.tier_steps(rm.tier_events(events), prog.zone, prog.tiering.window_months)
    return TierMove(prog, store._crm_tier_key(), steps)


def test_a_member_row_committed_meanwhile_is_updated_not_lost(pg_server: Any) -> None:
    url = pg_server.url()
    store = open_hq_store(url)
    assert isinstance(store, PgHqStore)
    Hq(store).publish_program(program_source())
    members = ["m-new", "m-raced"]
    rows = [(m, "S1", None, None, 3) for m in members]
    move = _move(store, members, 3)

    # A first push inserts m-raced and holds its transaction open.
    first = psycopg.connect(url)
    first.execute("INSERT INTO crm_members(member, store, balance, tier_upto, tier_sum, tier_year_sum, tier_key) "
                  "VALUES ('m-raced', 'S1', 5, %s, 5, 0, %s)", (AT, move.key))
    out: dict[str, Any] = {}

    def second() -> None:
        with store._tx() as c:
            out["slow"] = store._crm_upsert_members(c, LIVE, rows, move)

    t = threading.Thread(target=second)
    t.start()
    # The second push's INSERT waits on the first's row; once that commits, the statement's own
    # snapshot (taken before) does not show the row to its UPDATE.
    with psycopg.connect(url, autocommit=True) as watch:
        for _ in range(500):
            waiting = watch.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()
            if waiting and waiting[0]:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("the second push never waited on the first")
    first.commit()
    first.close()
    t.join(30)
    assert not t.is_alive()
    with psycopg.connect(url) as c:
        got = dict(c.execute("SELECT member, balance FROM crm_members").fetchall())
        sums = c.execute("SELECT tier_sum, tier_key FROM crm_members WHERE member = 'm-raced'").fetchone()
    assert got == {"m-new": 3, "m-raced": 8}
    assert sums == (8, move.key)  # the batch's step was added to the kept sums, once
    assert out["slow"] == set()
    store.close()


def test_a_batch_that_updates_every_member_row_keeps_each_row_on_its_page(pg_server: Any) -> None:
    """`crm_members` leaves room on each page for the next version of every row on it, so the
    per-batch update of every member a batch touches stays on the row's page (a HOT update: no
    index entry), even when the batch touches every row of the page (docs/SYNC.md)."""
    from tillstamp.loyalty import events as ev
    from tillstamp.loyalty.events import Event, new_id

    from .test_hq_contract import batch, enrol

    url = pg_server.url()
    store = open_hq_store(url)
    hq = Hq(store)
    hq.publish_program(program_source())
    t = enrol(hq, "S1")
    members = sorted(new_id() for _ in range(300))
    at = dt.datetime(2026, 3, 2, 3, tzinfo=dt.UTC)
    seq = 1
    pages = []
    for _round in range(3):
        events = [Event(new_id(), ev.EARNED, at, m, 1, "r", {}) for m in members]
        hq.push_raw(t, batch(t, seq, events).model_dump_json().encode(), "application/json")
        seq += len(events)
        with psycopg.connect(url) as c:
            pages.append(dict(c.execute("SELECT member, (ctid::text::point)[0] FROM crm_members").fetchall()))
    assert len(pages[0]) == len(members)
    assert pages[1] == pages[0] and pages[2] == pages[0]  # every new version on its row's page
    store.close()
