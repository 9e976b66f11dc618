"""Debian's chromium for the browser tests: where it is, how it is launched, and what a test
module does without it (skip with the reason; fail under CI=true, which must install it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]


def require_chromium() -> None:
    """Call at module level, before importing playwright."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{CHROMIUM} is missing: CI must install chromium for the browser tests")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); browser tests need it",
                    allow_module_level=True)
