"""Shared fixtures: the example program, an in-memory store, a service on a settable clock."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from support import EXAMPLE_PROGRAM, JAKARTA, Clock, shared_data_path

from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Service
from tillstamp.agent.store import Store, open_store
from tillstamp.loyalty.program import Program, load_program

# No example's speed is a test's verdict (speed is measured in benchmarks/): on a machine shared
# with other work, hypothesis's default 200 ms deadline failed a property test that round-trips
# rows through a real PostgreSQL whose first call took 564 ms. A test may still set its own.
settings.register_profile("tillstamp", deadline=None)
settings.load_profile("tillstamp")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpus folder; skips the test where it is absent, fails under CI=true."""
    path = shared_data_path()
    if (path / "qr").is_dir() and (path / "escpos").is_dir():
        return path
    reason = (f"shared test data not found at {path}: set TILLSTAMP_TEST_DATA to the folder "
              "holding qr/ and escpos/ (see tests/README.md)")
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def program() -> Program:
    return load_program(EXAMPLE_PROGRAM)


@pytest.fixture
def fresh_store() -> Store:
    store = open_store(":memory:")
    yield store
    store.close()


@pytest.fixture
def clock() -> Clock:
    # A Monday morning in Jakarta, outside happy hour.
    return Clock(dt.datetime(2026, 11, 23, 9, 0, tzinfo=JAKARTA))


@pytest.fixture
def keys() -> Keys:
    return Keys.generate("T1")


@pytest.fixture
def service(fresh_store: Store, program: Program, keys: Keys, clock: Clock) -> Service:
    return Service(fresh_store, program, keys, store_id="JKT-01", terminal_id="T1", clock=clock)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A private PostgreSQL server for the session (skipped without binaries, failed under CI)."""
    from sync.pgserver import PgServer, pg_bin

    if pg_bin() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries not found and CI=true: install postgresql-15")
        pytest.skip("PostgreSQL binaries not found (install postgresql-15 to run the PostgreSQL tests)")
    server = PgServer()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread() -> Iterator[None]:
    """Model fits are small vector operations: BLAS threads on a busy 2-core machine only spin."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
