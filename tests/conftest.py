"""Shared fixtures: the example program, an in-memory store, a service on a settable clock."""

from __future__ import annotations

import datetime as dt

import pytest
from support import EXAMPLE_PROGRAM, JAKARTA, Clock

from tillstamp.agent.keys import Keys
from tillstamp.agent.service import Service
from tillstamp.agent.store import Store, open_store
from tillstamp.loyalty.program import Program, load_program


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
