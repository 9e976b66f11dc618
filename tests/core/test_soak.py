"""Long versions of the crash and property runs, for `make soak` (not part of `make test`)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

pytestmark = pytest.mark.soak


def load(name: str):
    """The test module beside this one (tests are not importable by name in importlib mode)."""
    spec = importlib.util.spec_from_file_location(f"soak_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_crash_loop_many_rounds(tmp_path, monkeypatch):
    crash = load("test_crash")
    monkeypatch.setattr(crash, "ROUNDS", int(os.environ.get("TILLSTAMP_SOAK_ROUNDS", "60")))
    crash.test_sigkill_loses_nothing_acknowledged_and_counts_nothing_twice(tmp_path)


def test_ledger_properties_many_examples():
    props = load("test_properties")
    case = props.Till.TestCase
    case.settings = settings(max_examples=int(os.environ.get("TILLSTAMP_SOAK_EXAMPLES", "1500")),
                             stateful_step_count=60, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
    case("runTest").runTest()
