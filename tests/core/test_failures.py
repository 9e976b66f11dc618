"""`classify` names real failures: errors raised by SQLite and the OS in the conditions they
stand for, not hand-made exceptions."""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
from pathlib import Path

import pytest

from tillstamp.agent.failures import classify, find_surrogate


def test_a_database_that_cannot_grow_is_disk_full(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as c:
        c.execute("CREATE TABLE t (b BLOB)")
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        c.execute(f"PRAGMA max_page_count={pages + 1}")  # SQLite's own "disk full" (SQLITE_FULL)
        with pytest.raises(sqlite3.Error) as e:
            c.execute("INSERT INTO t VALUES (zeroblob(100000))")
    got = classify(e.value)
    assert got is not None and got.code == "disk_full" and got.message.startswith("disk full")


def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"this is not sqlite" * 500)
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as c, pytest.raises(sqlite3.Error) as e:
        c.execute("SELECT * FROM sqlite_master").fetchall()
    assert classify(e.value).code == "corrupt_database"  # type: ignore[union-attr]


def test_a_read_only_connection_is_read_only(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "x.db")) as c:
        c.execute("CREATE TABLE t (a)")
    uri = f"file:{tmp_path / 'x.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as c, pytest.raises(sqlite3.Error) as e:
        c.execute("INSERT INTO t VALUES (1)")
    assert classify(e.value).code == "read_only"  # type: ignore[union-attr]


def test_input_failures_and_os_errors() -> None:
    with pytest.raises(UnicodeDecodeError) as d:
        b"\xff".decode("utf-8")
    assert classify(d.value).code == "invalid_utf8"  # type: ignore[union-attr]
    with pytest.raises(UnicodeEncodeError) as s:
        "\ud800".encode("utf-8")
    assert classify(s.value).code == "invalid_text"  # type: ignore[union-attr]
    with pytest.raises(RecursionError) as r:
        json.loads("[" * 100_000 + "]" * 100_000)
    assert classify(r.value).code == "too_deep"  # type: ignore[union-attr]
    assert classify(OSError(errno.ENOSPC, "No space left on device")).code == "disk_full"  # type: ignore[union-attr]
    assert classify(OSError(errno.EROFS, "Read-only file system")).code == "read_only"  # type: ignore[union-attr]
    assert classify(ValueError("a bug")) is None
    assert classify(OSError(errno.ENOENT, "missing")) is None


def test_find_surrogate_looks_everywhere() -> None:
    assert find_surrogate({"lines": [{"name": "ok"}, {"name": "x\udcff"}]})
    assert find_surrogate({"\ud800": 1})
    assert not find_surrogate({"lines": [{"name": "Kopi ☕ Susu"}], "n": 3})
