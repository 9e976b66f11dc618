"""Read the CDNOW purchase log of Fader, Hardie & Lee (2005) into a History."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from tillstamp.insight.history import History, Row

UTC = dt.UTC


def data_dir() -> Path:
    """The shared test data: $TILLSTAMP_TEST_DATA, else <repo>/../shared/data."""
    env = os.environ.get("TILLSTAMP_TEST_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require(path: Path) -> Path:
    """The path, or a skip (a failure under CI=true) when the shared data is absent."""
    if path.exists():
        return path
    reason = f"shared test data not found at {path} (set TILLSTAMP_TEST_DATA)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def cdnow_rows(path: Path) -> list[Row]:
    """One row per log line: dollars become cents, each line its own receipt at local noon."""
    rows: list[Row] = []
    for i, line in enumerate(path.read_text().splitlines()):
        if not line.strip():
            continue
        _, sid, ymd, _, dollars = line.split()
        day = dt.datetime.strptime(ymd, "%Y%m%d").replace(hour=12, tzinfo=UTC)
        rows.append((sid, f"r{i}", day, "cd", "music", round(float(dollars) * 100)))
    return rows


def cdnow_history(path: Path) -> History:
    """The CDNOW sample as a History."""
    return History.from_rows(cdnow_rows(path))
