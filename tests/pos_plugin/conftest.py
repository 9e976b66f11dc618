"""Fixtures: a till folder and an agent serving the POS API on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent.kit import Agent, make_till, running_agent


@pytest.fixture
def till_dir(tmp_path: Path) -> Path:
    return make_till(tmp_path / "till")


@pytest.fixture
def agent(till_dir: Path) -> Iterator[Agent]:
    with running_agent(till_dir) as a:
        yield a
