"""The till's client: retry policy, parking, batch bounds, the cursor, and the loop."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tillstamp.agent.sync_store import client_for
from tillstamp.sync import errors
from tillstamp.sync.client import RetryPolicy, SyncLoop
from tillstamp.sync.transport import Reply, check

from .chaos import Scripted
from .conftest import HqHarness, TillHandle, sale


def _busy(status: int, retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after else {}
    return Reply(status, json.dumps({"error": "busy", "message": "later"}).encode(), headers)


def scripted(hq: HqHarness, tmp_path: Path, script: list[object], **kw: object) -> tuple[TillHandle, Scripted]:
    t = Scripted(hq.transport, [])
    h = hq.till(tmp_path, "a", "S1", transport=t, policy=RetryPolicy(attempts=4, jitter_s=0.5), **kw)
    t.script = list(script)
    t.calls = 0
    m = h.service.enroll("081234567890")
    for i in range(5):
        h.service.record_sale(sale(f"R{i}", m.id))
    return h, t


def test_error_tree_maps_statuses_once() -> None:
    for status, cls in ((400, errors.BadRequest), (401, errors.Unauthorized), (403, errors.Forbidden),
                        (409, errors.Conflict), (410, errors.Gone), (422, errors.BadRequest),
                        (429, errors.Throttled), (503, errors.Throttled), (500, errors.Throttled)):
        with pytest.raises(cls):
            check(_busy(status))
    with pytest.raises(errors.Throttled) as e:
        check(_busy(429, "12"))
    assert e.value.retry_after == 12
    assert issubclass(errors.Throttled, errors.Retryable) and issubclass(errors.Conflict, errors.Rejected)


def test_retry_after_is_honoured_and_backoff_resets_after_success(hq: HqHarness, tmp_path: Path) -> None:
    h, t = scripted(hq, tmp_path, [_busy(503, "7"), errors.Offline("down")], max_events=4)
    assert h.client.push_batch() == 4
    assert h.sleeps[0] >= 7 and 0 < h.sleeps[1] < 7
    t.script = [errors.TimedOut("slow")]
    h.sleeps.clear()
    assert h.client.push_batch() == 4  # the next batch of 4
    assert len(h.sleeps) == 1 and h.sleeps[0] < 2  # started again from the first wait


def test_giving_up_keeps_the_cursor(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [errors.Offline("down")] * 4)
    with pytest.raises(errors.Offline):
        h.client.push()
    assert h.till.sync.acked() == 0 and len(h.sleeps) == 3  # type: ignore[union-attr]
    assert h.client.push().acked == h.till.store.last_seq


def test_a_lost_ack_is_recovered_by_the_idempotent_retry(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, ["lost_reply"])
    assert h.client.push().acked == h.till.store.last_seq
    assert hq.hq.stats()["events"] == h.till.store.last_seq


@pytest.mark.parametrize("status", [400, 401, 403, 409])
def test_rejections_are_not_retried_but_parked(hq: HqHarness, tmp_path: Path, status: int) -> None:
    h, t = scripted(hq, tmp_path, [_busy(status)])
    with pytest.raises(errors.Rejected):
        h.client.push()
    assert h.sleeps == [] and t.calls == 1
    assert h.till.sync.parked()["status"] == status  # type: ignore[union-attr,index]
    with pytest.raises(errors.Parked):
        h.client.push()
    assert h.client.push(retry_parked=True).acked == h.till.store.last_seq


def test_batches_are_bounded_by_count_and_bytes(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [], max_events=3)
    assert h.client.push().batches == 4
    h2 = hq.till(tmp_path, "b", "S1", max_bytes=10)
    m = h2.service.enroll("081299999999")
    h2.service.record_sale(sale("Z", m.id))
    assert h2.client.push().batches == 3  # one event per batch when a batch cannot hold two


def test_the_cursor_only_follows_hq_acks(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [])
    sync = h.till.sync
    assert sync is not None
    sync.ack(5, hq_time=None, local_time=h.clock())
    sync.ack(3, hq_time=None, local_time=h.clock())
    assert sync.acked() == 5


def test_sync_loop_runs_in_a_thread_and_stops(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [])
    loop = SyncLoop(h.client, interval_s=0.01, max_rounds=3, sleep=lambda s: None)
    loop.start().wait(timeout=10)
    loop.stop()
    assert loop.rounds >= 1 and hq.hq.stats()["events"] == h.till.store.last_seq


def test_a_round_cut_short_by_a_stop_ends_the_thread_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent stops while a round waits on HQ; the ledger closes under it and the round fails."""
    waiting, release = threading.Event(), threading.Event()
    escaped: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args.exc_value))

    class Stalled:
        def push(self) -> None:
            waiting.set()
            release.wait(10)
            raise RuntimeError("the agent is shutting down")

        def pull(self) -> None:  # pragma: no cover - never reached
            raise AssertionError

    loop = SyncLoop(Stalled(), sleep=lambda s: None)  # type: ignore[arg-type]
    loop.start()
    thread = loop._thread
    assert waiting.wait(10) and thread is not None
    loop.stop(timeout=0)
    release.set()
    thread.join(10)
    assert not thread.is_alive() and escaped == []


def test_sync_loop_reports_rejections(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [_busy(403)])
    alerts: list[errors.SyncError] = []
    loop = SyncLoop(h.client, max_rounds=2, sleep=lambda s: None, on_alert=alerts.append)
    loop.start().wait(timeout=10)
    assert isinstance(alerts[0], errors.Forbidden) and isinstance(alerts[-1], errors.Parked)


def test_client_for_builds_a_requests_transport_by_default(hq: HqHarness, tmp_path: Path) -> None:
    h, _ = scripted(hq, tmp_path, [])
    c = client_for(h.till.store, h.till.keys, h.till.sync, "https://hq.example")  # type: ignore[arg-type]
    assert c.transport.session.verify is True  # type: ignore[attr-defined]
