"""Shared fixtures: the example program, an in-memory store, a service on a settable clock."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from support import EXAMPLE_PROGRAM, JAKARTA, Clock, shared_data_path

from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Service
from tillstamp.agent.store import Store, open_store
from tillstamp.loyalty.program import Program, load_program


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
