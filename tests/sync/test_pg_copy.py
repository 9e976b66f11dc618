"""HQ on PostgreSQL builds COPY's text format itself (one string per chunk): every value must
come back from a real server exactly as it went in, escapes and NULLs included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.hq.store import EVENT_COLS, stored_row
from tillstamp.hq.store_pg import _STAGING, copy_text
from tillstamp.sync.wire import Incoming

# PostgreSQL text holds any character but NUL; lone surrogates cannot be encoded at all.
chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
awkward = st.text(chars, max_size=12) | st.sampled_from(["\\", "\\N", "\t", "\n", "\r\n", "a\\tb", "\\\\N", ""])
nonempty = awkward.filter(bool)


@pytest.fixture(scope="module")
def conn(pg_server: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_server.url(), autocommit=True) as c:
        c.execute(_STAGING[0])
        yield c


events = st.lists(st.builds(
    Incoming, id=nonempty, terminal=nonempty, store=nonempty, seq=st.integers(1, 2**62), kind=nonempty,
    member=st.none() | awkward, at=nonempty, stamps=st.integers(-10**6, 10**6), ref=st.none() | awkward,
    body=awkward, content=st.just(b"")), min_size=1, max_size=5)
digest = st.text("0123456789abcdef", min_size=64, max_size=64)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=events, digest=digest)
def test_copy_text_round_trips_through_postgresql(conn: psycopg.Connection[Any], batch: list[Incoming],
                                                  digest: str) -> None:
    cols = ", ".join(EVENT_COLS)
    with conn.transaction(), conn.cursor() as c:
        with c.copy(f"COPY staging ({cols}) FROM STDIN") as copy:
            copy.write(copy_text(batch, [digest] * len(batch)))
        got = c.execute(f"SELECT {cols} FROM staging").fetchall()
        c.execute("DELETE FROM staging")
    assert sorted(map(repr, got)) == sorted(repr(stored_row(e, digest)) for e in batch)


def test_plain_rows_take_the_fast_path_and_escapes_do_not() -> None:
    plain = Incoming("E1", "T", "S", 1, "k", None, "at", 1, None, '{"a":"b"}', b"")
    escaped = plain._replace(body='{"a":"b\\"c"}')
    text = copy_text([plain, escaped], ["d", "d"])
    assert text.splitlines()[0] == "E1\tT\tS\t1\tk\t\\N\tat\t1\t\\N\t{\"a\":\"b\"}\td"
    assert '{"a":"b\\\\"c"}' in text.splitlines()[1]  # the backslash doubled
