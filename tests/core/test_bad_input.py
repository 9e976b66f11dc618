"""Bad input and a bad environment at the command line: one clear line on stderr, exit 2,
nothing written. Invalid UTF-8, lone surrogates, 3,000-deep JSON, a damaged or read-only
till.db, a full disk, head office unreachable at `init`, `hq erase` of a non-member."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import EXAMPLE_PROGRAM

from tillstamp.agent.till import init_till
from tillstamp.cli import main

SALE = {"receipt": "R-1", "total": 25000, "lines": [{"sku": "KOPI", "qty": 1, "price": 25000}]}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "till"
    init_till(d, store="S1", terminal="T1", program=EXAMPLE_PROGRAM)
    return d


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def events(data: Path) -> int:
    with contextlib.closing(sqlite3.connect(data / "till.db")) as c:
        return int(c.execute("SELECT count(*) FROM ledger").fetchone()[0])


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"receipt": "R-\xff", "total": 1, "lines": []}', "not valid UTF-8"),
    (json.dumps({**SALE, "receipt": "R-\ud800"}).encode(), "unpaired surrogate"),
    (b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (b'{"receipt": "R-1", "lines": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
])
def test_undecodable_sales_are_refused_per_line(data: Path, tmp_path: Path, capsys, body: bytes,
                                                reason: str) -> None:
    f = tmp_path / "sales.jsonl"
    f.write_bytes(body + b"\n" + json.dumps(SALE).encode() + b"\n")
    code, out, err = run(capsys, "sale", "record", str(f), "--data", str(data), "--json")
    assert code == 2 and reason in err and "Traceback" not in err
    assert err.count("\n") == 1
    refused, recorded = (json.loads(x) for x in out.splitlines())
    assert refused["line"] == 1 and "error" in refused and recorded["receipt"] == "R-1"
    assert events(data) == 1  # only the good line


def test_an_argument_that_is_not_utf8_is_refused(data: Path, capsys) -> None:
    bad = b"Budi\xff".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    code, _, err = run(capsys, "member", "enroll", "--phone", "081234567890", "--name", bad,
                       "--data", str(data))
    assert code == 2 and "not valid UTF-8" in err and err.count("\n") == 1
    assert events(data) == 0


@pytest.mark.parametrize("damage", ["garbage", "torn"])
def test_a_damaged_database_is_named(data: Path, capsys, damage: str) -> None:
    db = data / "till.db"
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray(db.read_bytes())
    if damage == "garbage":
        raw[:] = os.urandom(8192)
    else:
        raw[4096 * 2: 4096 * 6] = b"\x55" * len(raw[4096 * 2: 4096 * 6])
    db.write_bytes(bytes(raw))
    for argv in (["member", "enroll", "--phone", "081234567890"], ["ledger", "verify"]):
        code, _, err = run(capsys, *argv, "--data", str(data))
        assert code == 2 and "damaged" in err and err.count("\n") == 1, err


def test_init_with_head_office_unreachable_creates_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "new"
    code, _, err = run(capsys, "init", "--hq", "http://127.0.0.1:9", "--code", "ABCD-EFGH",
                       "--data", str(data))
    assert code == 2 and "cannot be reached" in err and err.count("\n") == 1
    assert not data.exists()


def test_hq_erase_of_a_non_member_is_refused(tmp_path: Path, capsys) -> None:
    from tillstamp.hq.store import open_hq_store

    db = f"sqlite:///{tmp_path / 'hq.db'}"
    for who in ("01NOTAMEMBER000000000000000", "0812-0000-1111"):
        code, out, err = run(capsys, "hq", "erase", who, "--db", db)
        assert code == 2 and "not a member" in err and out == ""
    # A member HQ knows, by phone: erased.
    store = open_hq_store(db)
    with store._tx() as c:  # a member row as a till's push leaves it
        c.execute("INSERT INTO members(id, phone, name, email, birthday, origin, enrolled_at, updated_at) "
                  "VALUES (?, ?, ?, NULL, NULL, 'till', NULL, '2026-01-01')",
                  ("01KNOWNMEMBER00000000000000", "+6281200001111", "Ani"))
    store.close()
    code, out, _ = run(capsys, "hq", "erase", "0812-0000-1111", "--db", db, "--json")
    assert code == 0 and json.loads(out) == {"erased": "01KNOWNMEMBER00000000000000"}


# -- a real full disk and a real read-only filesystem (tmpfs, needs root) ------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> None:
    # Unbuffered: the write that hits ENOSPC is the last, and closing has nothing left to flush.
    with open(folder / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)


def test_a_full_disk_says_disk_full(tmp_path: Path, capsys) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        data = fs / "till"
        init_till(data, store="S1", terminal="T1", program=EXAMPLE_PROGRAM)
        before = events(data)
        fill(fs)
        for argv in (["member", "enroll", "--phone", "081234567890", "--name", "Budi"],):
            code, _, err = run(capsys, *argv, "--data", str(data))
            assert code == 2 and "disk full" in err and err.count("\n") == 1, err
        (fs / "filler").unlink()
        assert events(data) == before
        code, _, _ = run(capsys, "member", "enroll", "--phone", "081234567890", "--data", str(data))
        assert code == 0  # space again: the same command works


def test_a_read_only_database_is_named(tmp_path: Path, capsys) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        data = fs / "till"
        init_till(data, store="S1", terminal="T1", program=EXAMPLE_PROGRAM)
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        code, _, err = run(capsys, "member", "enroll", "--phone", "081234567890", "--data", str(data))
        assert code == 2 and "read-only" in err and err.count("\n") == 1, err
