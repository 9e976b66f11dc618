"""Test transports that misbehave on purpose, in process."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tillstamp.sync import errors
from tillstamp.sync.transport import Reply, Transport

DELIVER, DROP_REQUEST, DROP_REPLY, DUPLICATE, REPLAY_OLD = "deliver", "drop_req", "drop_reply", "dup", "replay"


class Scripted:
    """Plays a script before delegating: an exception is raised, a Reply is returned,
    "lost_reply" delivers the request but raises Offline as if the answer was lost."""

    def __init__(self, inner: Transport, script: list[Any]):
        self.inner = inner
        self.script = list(script)
        self.calls = 0

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        self.calls += 1
        if self.script:
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Reply):
                return item
            if item == "lost_reply":
                self.inner.request(method, path, body=body, headers=headers)
                raise errors.Offline("reply lost")
        return self.inner.request(method, path, body=body, headers=headers)

    def close(self) -> None:
        pass


class Chaos:
    """Each request meets a fault chosen by `choose` (hypothesis draws it)."""

    def __init__(self, inner: Transport, choose: Callable[[], str]):
        self.inner = inner
        self.choose = choose
        self.old: list[tuple[str, str, bytes, dict[str, str]]] = []

    def request(self, method: str, path: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Reply:
        fault = self.choose()
        h = dict(headers or {})
        if fault == DROP_REQUEST:
            raise errors.Offline("request dropped")
        reply = self.inner.request(method, path, body=body, headers=h)
        self.old.append((method, path, body, h))
        if fault == DROP_REPLY:
            raise errors.Offline("reply dropped")
        if fault == DUPLICATE:  # the network delivers it twice; the second answer goes nowhere
            self.inner.request(method, path, body=body, headers=h)
        if fault == REPLAY_OLD and self.old:  # an old request shows up late (reordered)
            m, pth, b, hh = self.old[0]
            self.inner.request(m, pth, body=b, headers=hh)
        return reply

    def close(self) -> None:
        pass
