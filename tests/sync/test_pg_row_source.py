"""HQ on PostgreSQL sends a statement's column lists as one joined text each, split by the
server (`store_pg._row_source`): every list must come back from a real server exactly as it went
in, NULLs included, and a list that cannot be joined must still go (as a binary array)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tillstamp.hq.store_pg import _row_source, joined_column

# PostgreSQL text holds any character but NUL; lone surrogates cannot be encoded at all.
chars = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
texts = st.text(chars, max_size=8) | st.sampled_from(["", "\x1f", "a\x1fb", "\\", "NULL", ","])


@pytest.fixture(scope="module")
def conn(pg_server: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_server.url(), autocommit=True) as c:
        yield c


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(texts, st.none() | texts, st.none() | st.integers(-2**63, 2**63 - 1)), max_size=6))
def test_columns_come_back_as_sent(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> None:
    params: dict[str, Any] = {"a": [r[0] for r in rows], "b": [r[1] for r in rows], "n": [r[2] for r in rows]}
    source = _row_source(params, "x", (("a", "text"), ("b", "text"), ("n", "bigint")))
    got = conn.execute(f"WITH {source} SELECT a, b, n FROM x", params).fetchall()
    assert got == rows


def test_a_column_is_joined_only_when_it_reads_back_the_same() -> None:
    assert joined_column(["m1", None, "m2"]) == "m1\x1f\x1fm2"
    assert joined_column([1, None, -3]) == "1\x1f\x1f-3"
    assert joined_column([]) == ""
    assert joined_column(["a", ""]) is None  # an empty text would come back as NULL
    assert joined_column(["a\x1fb"]) is None  # the separator inside a value
    assert joined_column([None]) is None  # '' reads back as no element at all, not one NULL
    params: dict[str, Any] = {"a": ["x", ""]}
    assert "%(a)b" in _row_source(params, "x", (("a", "text"),)) and params["a"] == ["x", ""]
