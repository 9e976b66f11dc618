"""The event stream over real loopback HTTP: a client reconnecting with `Last-Event-ID` gets
what it missed, once and in order; beyond what is kept, or across a restart, it is told so."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import requests
from agent.kit import sale

KEEP = 50  # the hub keeps the last 50 events


def _events(url: str, last_id: str | None, want: int, ready: threading.Event | None = None,
            kinds: tuple[str, ...] = ("sale", "enrol", "replay_gap")
            ) -> list[tuple[str | None, dict[str, Any]]]:
    """Read `want` events of `kinds` (id, data), sending `last_id` as Last-Event-ID.

    Device and print events come and go with the file printer; the tests count sales and
    enrolments, and the id of the last event of any kind is what a browser would send back.
    """
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    out: list[tuple[str | None, dict[str, Any]]] = []
    with requests.get(url + "/v1/events", headers=headers, stream=True, timeout=10) as r:
        assert r.status_code == 200
        ident = None
        for line in _lines(r):
            if line.startswith(": connected") and ready is not None:
                ready.set()
            elif line.startswith("id: "):
                ident = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if data["type"] in kinds:
                    out.append((ident, data))
                ident = None
                if len(out) == want:
                    return out
    return out


def _lines(r: requests.Response) -> Iterator[str]:
    for raw in r.iter_lines(decode_unicode=True):
        if raw:
            yield raw


def _live(url: str, want: int) -> tuple[threading.Thread, list]:
    got: list = []
    ready = threading.Event()
    t = threading.Thread(target=lambda: got.extend(_events(url, None, want, ready)), daemon=True)
    t.start()
    assert ready.wait(10)
    return t, got


def test_a_reconnecting_client_gets_what_it_missed_once_in_order(agent) -> None:
    t, first = _live(agent.url, 1)
    agent.client.record_sale(sale("E1"))
    t.join(10)
    (last_id, seen), = first
    assert seen["receipt"] == "E1" and last_id and "." in last_id
    for n in range(2, 5):  # while the client is away
        agent.client.record_sale(sale(f"E{n}"))
    got = _events(agent.url, last_id, 3)
    assert [d["receipt"] for _, d in got] == ["E2", "E3", "E4"]
    assert all(d["type"] == "sale" for _, d in got)
    assert len({i for i, _ in got}) == 3  # each once


def test_more_missed_than_kept_says_replay_gap_then_the_kept_ones(agent) -> None:
    t, first = _live(agent.url, 1)
    agent.client.record_sale(sale("F0"))
    t.join(10)
    last_id = first[0][0]
    for n in range(1, KEEP + 6):
        agent.client.enroll(f"0812-7000-{n:04d}", f"M{n}")  # one event each
    got = _events(agent.url, last_id, KEEP + 1)
    assert got[0] == (None, {"type": "replay_gap"})
    names = [d["name"] for _, d in got[1:]]
    assert len(names) == KEEP and names[-1] == f"M{KEEP + 5}"  # the newest 50, bounded


def test_an_id_from_another_run_of_the_agent_is_a_gap(agent) -> None:
    agent.client.record_sale(sale("G0"))
    got = _events(agent.url, "deadbeef.1", 2)
    assert got[0] == (None, {"type": "replay_gap"})
    assert got[1][1]["receipt"] == "G0"


def test_a_first_connection_replays_nothing(agent) -> None:
    agent.client.record_sale(sale("H0"))
    t, got = _live(agent.url, 1)
    agent.client.record_sale(sale("H1"))
    t.join(10)
    assert [d["receipt"] for _, d in got] == ["H1"]
