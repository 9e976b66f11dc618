"""Fixtures for segment and staff tests: HQ stores on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_url(request: pytest.FixtureRequest) -> str:
    """Both HQ backends."""
    if request.param == "sqlite":
        return "sqlite:///:memory:"
    return str(request.getfixturevalue("pg_server").url())
