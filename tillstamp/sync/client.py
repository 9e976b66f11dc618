"""The till's sync client: push the outbox, pull the change feed, and a background loop.

The client knows nothing of SQLite: it talks to an `Outbox` (the agent implements it in
`agent/sync_store.py`) and to HQ through a `Transport`. The push cursor moves only to what
HQ acknowledges; a rejected batch (400/401/403/409) is parked and stops pushing until a
person looks; retryable failures back off (exponential, jittered, honouring Retry-After).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import tenacity
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from ..loyalty import tokens
from . import errors
from . import protocol as p
from .transport import InProcessTransport, Reply, RequestsTransport, Transport, check
from .wire import LEDGER_TYPE, LedgerRow, ledger_line

log = logging.getLogger(__name__)
MAX_EVENTS = 10_000  # per batch; HQ accepts up to protocol.MAX_BATCH_EVENTS
MAX_BYTES = 4 << 20  # of JSON per batch, before gzip; HQ accepts up to protocol.MAX_BODY_BYTES
M = TypeVar("M", bound=BaseModel)


class Outbox(Protocol):
    """What the client needs from the till's database."""

    terminal: str

    def acked(self) -> int:
        """The highest sequence HQ has acknowledged."""
        ...

    def last_seq(self) -> int:
        """The newest sequence in the ledger."""
        ...

    def ledger_rows(self, after: int, limit: int) -> Iterator[LedgerRow]:
        """Up to `limit` ledger rows with seq > after, in order, streamed (closing it ends the read).

        Called from the client's prefetch thread: it must read committed rows only, and not
        through a connection another thread is writing with.
        """
        ...

    def members_changed(self, after: int, upto: int) -> Sequence[dict[str, Any]]:
        """PII rows changed by events in (after, upto], to travel with them."""
        ...

    def ack(self, seq: int, *, hq_time: dt.datetime | None, local_time: dt.datetime) -> None:
        """Record HQ's acknowledgement (never moves back)."""
        ...

    def note_contact(self, hq_time: dt.datetime, local_time: dt.datetime) -> None:
        """HQ answered: remember the clock offset and the time of contact."""
        ...

    def clock_offset(self) -> float:
        """Seconds this till's clock is ahead of HQ's (last measured)."""
        ...

    def park(self, first: int, last: int, error: errors.Rejected, at: dt.datetime) -> None:
        """Set a rejected batch aside and raise an alert."""
        ...

    def parked(self) -> dict[str, Any] | None:
        """The open parked batch, if any."""
        ...

    def unpark(self) -> None:
        """Clear the parked batch (a person asked to try again)."""
        ...

    def pull_cursor(self) -> int:
        """Where the next pull starts."""
        ...

    def apply_page(self, page: p.PullResponse) -> None:
        """Apply a feed page and store its cursor, in one transaction."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """How one request is retried: tenacity's stop, wait and retry, defined once."""

    attempts: int = 6
    initial_s: float = 0.5
    max_wait_s: float = 60.0
    jitter_s: float = 1.0
    timeout_s: float = 30.0

    def retrying(self, sleep: Callable[[float], None]) -> tenacity.Retrying:
        """A fresh Retrying (so backoff starts again after each success)."""
        expo = tenacity.wait_exponential_jitter(multiplier=self.initial_s, max=self.max_wait_s, jitter=self.jitter_s)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            hinted = getattr(exc, "retry_after", None)
            base = expo(state)
            # HQ said when to come back: never sooner, but keep the jitter to spread tills out.
            return max(base, float(hinted)) if hinted is not None else base

        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(errors.Retryable),
            sleep=sleep,
            reraise=True,
        )


@dataclass(frozen=True)
class PushReport:
    """What a push did, and how long it took."""

    pushed: int
    acked: int
    waiting: int
    batches: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pushed": self.pushed, "acked": self.acked, "waiting": self.waiting, "batches": self.batches,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Batch:
    """A push body ready to send (gzip JSON) and the sequences it carries."""

    body: bytes
    first: int
    last: int


@dataclass(frozen=True)
class PullReport:
    """What a pull did."""

    pages: int
    changes: int
    cursor: int
    reset: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"pages": self.pages, "changes": self.changes, "cursor": self.cursor, "reset": self.reset}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SyncClient:
    """Push and pull for one terminal."""

    def __init__(self, transport: Transport, outbox: Outbox, key: Ed25519PrivateKey, *,
                 policy: RetryPolicy | None = None, clock: Callable[[], dt.datetime] = _utcnow,
                 sleep: Callable[[float], None] = time.sleep, max_events: int = MAX_EVENTS,
                 max_bytes: int = MAX_BYTES, page_size: int = 200):
        self.transport = transport
        self.outbox = outbox
        self.key = key
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.sleep = sleep
        self.max_events = max(1, min(max_events, p.MAX_BATCH_EVENTS))
        self.max_bytes = max_bytes
        self.page_size = page_size

    # -- one signed request -------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        for attempt in (1, 2):
            local = self.clock()
            # Sign with HQ's time as we last measured it, so a till whose clock is off
            # can still authenticate (rule 9: the clock is business data, not order).
            hq_now_ms = int((local.timestamp() - self.outbox.clock_offset()) * 1000)
            signed = p.sign_request(self.key, self.outbox.terminal, method, path, body, hq_now_ms)
            reply = self.transport.request(method, path, body=body, headers={**(headers or {}), **signed})
            if reply.hq_time is not None:
                self.outbox.note_contact(reply.hq_time, local)
            try:
                return check(reply)
            except errors.Unauthorized as e:
                if e.code != "clock_skew" or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, fn: Callable[[], Reply], model: type[M]) -> tuple[Reply, M]:
        for attempt in self.policy.retrying(self.sleep):
            with attempt:
                reply = fn()
                try:
                    return reply, model.model_validate_json(reply.body)
                except ValidationError:
                    # A 2xx whose body does not parse was cut on the way (a proxy, a
                    # dropped connection mid-headers): the same as no answer at all.
                    raise errors.Offline(f"garbled answer ({len(reply.body)} bytes)") from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- push ---------------------------------------------------------------------------

    def _batch(self, after: int) -> Batch | None:
        """The next body after `after`: at most `max_events` events and about `max_bytes` of text.

        Rows stream from the ledger into ledger lines (`wire.LEDGER_TYPE`: each line is the
        text the row's hash covers, so HQ hashes it as received) and into the compressor
        64 KiB at a time, so the till holds one compressed batch and a small buffer, never the
        backlog or a whole body.
        """
        gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip framing, level 1
        out = []
        buf: list[str] = []
        pending = size = 0
        last = after
        tip = ""
        with contextlib.closing(self.outbox.ledger_rows(after, self.max_events)) as rows:  # type: ignore[type-var]
            for r in rows:
                text = ledger_line(r)
                if last > after and size + len(text) > self.max_bytes:
                    break
                buf.append(text)
                size += len(text) + 1
                pending += len(text) + 1
                last, tip = r.seq, r.hash
                if pending >= 1 << 16:
                    buf.append("")
                    out.append(gz.compress("\n".join(buf).encode()))
                    buf.clear()
                    pending = 0
        if last == after:
            return None
        members = list(self.outbox.members_changed(after, last))
        buf.append(json.dumps({"members": members, "hash": tip}, ensure_ascii=False))
        out.append(gz.compress("\n".join(buf).encode()))
        out.append(gz.flush())
        return Batch(b"".join(out), after + 1, last)

    def _push(self, batch: Batch) -> int:
        """Send one batch; the cursor moves to what HQ acknowledges. Returns how far it moved."""
        before = self.outbox.acked()
        headers = {"Content-Type": LEDGER_TYPE, "Content-Encoding": "gzip"}
        try:
            reply, resp = self._retrying(lambda: self._send("POST", "/v1/push", batch.body, headers), p.PushResponse)
        except errors.Rejected as e:
            self.outbox.park(batch.first, batch.last, e, self.clock())
            raise
        self.outbox.ack(resp.acked, hq_time=reply.hq_time, local_time=self.clock())
        return max(0, self.outbox.acked() - before)

    def push_batch(self) -> int:
        """Push the next batch; returns how many events HQ newly acknowledged (0: nothing waiting)."""
        batch = self._batch(self.outbox.acked())
        return 0 if batch is None else self._push(batch)

    def push(self, *, max_batches: int | None = None, retry_parked: bool = False) -> PushReport:
        """Push until the outbox is drained (or `max_batches`); the cursor follows HQ's acks.

        One batch is in flight at a time (HQ refuses a batch that does not start right after
        what it holds); the next body is read, encoded and compressed in a second thread
        meanwhile, from the sequence the batch in flight ends at. If HQ acknowledges anything
        else, that body is dropped and the next one is built from HQ's acknowledgement.
        """
        if self.outbox.parked() is not None:
            if not retry_parked:
                raise errors.Parked(f"pushing is parked: {self.outbox.parked()}")
            self.outbox.unpark()
        start = time.perf_counter()
        pushed = batches = 0
        with ThreadPoolExecutor(1, thread_name_prefix="tillstamp-push") as pool:
            nxt = pool.submit(self._batch, self.outbox.acked())
            while max_batches is None or batches < max_batches:
                batch = nxt.result()
                if batch is None:
                    break
                nxt = pool.submit(self._batch, batch.last)
                n = self._push(batch)
                if n == 0:
                    break
                pushed += n
                batches += 1
                if self.outbox.acked() != batch.last:  # HQ holds something else: rebuild from its ack
                    nxt.result()
                    nxt = pool.submit(self._batch, self.outbox.acked())
        acked = self.outbox.acked()
        return PushReport(pushed, acked, max(0, self.outbox.last_seq() - acked), batches,
                          time.perf_counter() - start)

    # -- online authorisation ------------------------------------------------------------

    def authorize(self, member: str, reward: str, cost: int, *, after: int, pending: int) -> p.AuthorizeResponse:
        """Ask HQ to authorise a redemption, once, without retries: the cashier is waiting, and
        the transport's deadline bounds the wait. Errors are the usual tree (Retryable: offline)."""
        body = p.AuthorizeRequest(member=member, reward=reward, cost=cost, after=after,
                                  pending=pending).model_dump_json().encode()
        reply = self._send("POST", "/v1/authorize", body, {"Content-Type": "application/json"})
        try:
            return p.AuthorizeResponse.model_validate_json(reply.body)
        except ValidationError:
            raise errors.Offline(f"garbled answer ({len(reply.body)} bytes)") from None

    # -- pull ---------------------------------------------------------------------------

    def pull(self, *, max_pages: int = 1000) -> PullReport:
        """Apply feed pages until HQ has no more; a 410 restarts from a full snapshot."""
        cursor = self.outbox.pull_cursor()
        pages = changes = 0
        reset = False
        while pages < max_pages:
            path = f"/v1/pull?cursor={cursor}&limit={self.page_size}"
            try:
                _, page = self._retrying(functools.partial(self._send, "GET", path), p.PullResponse)
            except errors.Gone:
                if cursor == 0:
                    raise
                cursor = 0  # older than the feed keeps: take everything again
                continue
            self.outbox.apply_page(page)
            reset = reset or page.reset
            pages += 1
            changes += len(page.changes)
            cursor = page.next
            if not page.more:
                break
        return PullReport(pages, changes, cursor, reset)


def enroll(transport: Transport, key: Ed25519PrivateKey, code: str, *, terminal: str | None = None,
           store: str | None = None, member_key: Ed25519PrivateKey | None = None) -> p.EnrollResponse:
    """Register this till's terminal key with HQ using a one-time code."""
    req = p.EnrollRequest(
        code=code.strip().upper(),
        public_key=tokens.public_bytes(key.public_key()).hex(),
        proof=p.enroll_proof(key, code.strip().upper()),
        terminal=terminal,
        store=store,
        member_key=tokens.public_bytes(member_key.public_key()).hex() if member_key else None,
    )
    reply = check(transport.request("POST", "/v1/enroll", body=req.model_dump_json().encode(),
                                    headers={"Content-Type": "application/json"}))
    return p.EnrollResponse.model_validate_json(reply.body)


class SyncLoop:
    """Pushes and pulls in a background thread until stopped; nothing starts at import."""

    def __init__(self, client: SyncClient, *, interval_s: float = 10.0, idle_max_s: float = 300.0,
                 sleep: Callable[[float], None] | None = None, max_rounds: int | None = None,
                 on_alert: Callable[[errors.SyncError], None] | None = None):
        self.client = client
        self.interval_s = interval_s
        self.idle_max_s = idle_max_s
        self.max_rounds = max_rounds
        self.on_alert = on_alert or (lambda e: log.warning("sync: %s", e))
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_error: errors.SyncError | None = None

    def round(self) -> None:
        """One push and one pull; errors are recorded, never swallowed silently."""
        try:
            self.client.push()
            self.client.pull()
            self.last_error = None
        except errors.Retryable as e:
            self.last_error = e  # offline: the outbox keeps everything, try next round
        except (errors.Rejected, errors.Parked) as e:
            self.last_error = e
            self.on_alert(e)

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.is_set() and (self.max_rounds is None or self.rounds < self.max_rounds):
            try:
                self.round()
            except Exception:
                # A round still waiting on HQ when the agent stops finds the ledger closed under
                # it: nothing is lost (the outbox keeps every event), so end quietly.
                if self._stop.is_set():
                    return
                raise
            self.rounds += 1
            # After a rejection or a long outage, ask less often; one success resets it.
            delay = self.interval_s if self.last_error is None else min(delay * 2, self.idle_max_s)
            self._sleep(delay)

    def start(self) -> SyncLoop:
        """Start the background thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tillstamp-sync", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the thread to end by itself (after `max_rounds`)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


__all__ = [
    "InProcessTransport",
    "Outbox",
    "PullReport",
    "PushReport",
    "Reply",
    "RequestsTransport",
    "RetryPolicy",
    "SyncClient",
    "SyncLoop",
    "Transport",
    "enroll",
    "errors",
    "p",
]
