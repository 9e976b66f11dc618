"""Fixtures for segment and staff tests: HQ stores on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


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


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_url(request: pytest.FixtureRequest) -> str:
    """Both HQ backends."""
    if request.param == "sqlite":
        return "sqlite:///:memory:"
    return str(request.getfixturevalue("pg_server").url())
