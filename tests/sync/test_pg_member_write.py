"""HQ on PostgreSQL writes a batch's member rows in one statement (an INSERT of the new ones and
an UPDATE of the others, sharing a snapshot). A row another push commits after that snapshot is
seen by neither: it must be written again, never lost."""

from __future__ import annotations

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
