"""`tillstamp hq user add --password-stdin` and `hq user password`: the password is read from
stdin, stored argon2-hashed, and opens the dashboard; a short one is refused and changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tillstamp.hq.service import Hq
from tillstamp.hq.store import open_hq_store
from tillstamp.hq.web import store_web
from tillstamp.hq.web.auth import Auth

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tillstamp", *args], input=stdin, capture_output=True, text=True, check=False,
                          env=env, timeout=120)


def test_user_password_from_stdin(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    r = _cli("hq", "user", "add", "sari", "--role", "owner", "--password-stdin", "--db", db, stdin="short\n")
    assert r.returncode == 2 and "at least 10 characters" in r.stderr
    r = _cli("hq", "user", "add", "sari", "--role", "manager:S1", "--password-stdin", "--db", db,
             stdin="kopi senja pagi\n")
    assert r.returncode == 0, r.stderr
    store = open_hq_store(db)
    try:
        login = store_web.login_of(store, "sari")
        assert login is not None and login.password_hash.startswith("$argon2id$")
        assert "kopi senja pagi" not in login.password_hash
        auth = Auth(store, Hq(store).clock)
        who = auth.login("sari", "kopi senja pagi")
        assert who is not None and who.scope == "S1"
        assert auth.login("sari", "kopi senja siang") is None
    finally:
        store.close()
    r = _cli("hq", "user", "password", "sari", "--db", db, stdin="teh manis sore\n")
    assert r.returncode == 0, r.stderr
    r = _cli("hq", "user", "password", "nobody", "--db", db, stdin="teh manis sore\n")
    assert r.returncode == 2 and "not found" in r.stderr
    store = open_hq_store(db)
    try:
        auth = Auth(store, Hq(store).clock)
        assert auth.login("sari", "kopi senja pagi") is None and auth.login("sari", "teh manis sore") is not None
    finally:
        store.close()
