"""Flows at run time: one tick evaluates every active flow (under the scheduler's lease) and
queues due messages, then workers send what is due, at most once (docs/FLOWS.md).

At most once, in three steps, each its own transaction:
1. queue: a row per (flow, member, occurrence), unique, before anything else;
2. decide: claim rows (`doing`), re-check erasure, quiet hours, consent and the cap with the
   member's row locked, and mark the chosen channel `committed_at`;
3. call the provider, then record sent / failed / unknown.
A crash between 2 and 3 leaves `doing` + `committed_at`: recovered as `unknown`, never resent.
A crash before 2 commits leaves `doing` without it: nothing was sent, so it is queued again.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError

from . import store_flows as sf
from .channels import Channel, ChannelError, NotSent, Outgoing, Rejected, SendResult, retry_not_sent
from .channels.whatsapp import STOPPED_MARKETING
from .flows import Flow, FlowError, held_out, message_ref, parse_flow, parse_flows_text, render
from .messaging import MessagingConfig
from .optout import unsubscribe_url
from .readmodel import DEFAULT_ZONE, epoch_day
from .segments import AsOf, StampsExpiring
from .service import Hq

SKIP_REASONS = ("no_consent", "quiet_hours", "capped", "erased")
MAX_ATTEMPTS = 5  # claims of one message whose sends all said "nothing was sent"
_RETRY_LATER = dt.timedelta(minutes=10)
_PAUSED_RETRY = dt.timedelta(hours=1)


@dataclass
class TickResult:
    """What one tick did."""

    due: int = 0
    sent: int = 0
    held_out: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    scheduled: bool = False
    requeued: int = 0
    flows: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON `hq flow run --json` prints."""
        return {"due": self.due, "sent": self.sent, "held_out": self.held_out, "skipped": dict(self.skipped),
                "failed": self.failed, "unknown": self.unknown, "scheduled": self.scheduled,
                "requeued": self.requeued, "flows": self.flows}

    def add(self, other: TickResult) -> None:
        """Fold another worker's counts into this one."""
        for k in ("due", "sent", "held_out", "failed", "unknown", "requeued"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k, v in other.skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v


class FlowEngine:
    """Flows, the scheduler and the sender over one HQ."""

    def __init__(self, hq: Hq, config: MessagingConfig, channels: dict[str, Channel] | None = None, *,
                 worker: str | None = None, sleep: Callable[[float], None] | None = None):
        self.hq = hq
        self.store: Any = hq.store
        self.config = config
        if channels is None:
            from .channels import open_channels

            channels = open_channels(config)
        self.channels = channels
        self.worker = worker or f"{os.getpid()}-{secrets.token_hex(4)}"
        self.sleep = sleep

    # -- flows ---------------------------------------------------------------------------

    def set_flows(self, text: str, source: str = "flows") -> list[Flow]:
        """Validate a flows file and store every flow in it (a flow of the same name is replaced)."""
        parsed = parse_flows_text(text, source)
        for i, f in enumerate(parsed):
            if f.audience is not None:
                self._audience_check(f.audience, f"flows[{i}].audience")
        now = self.hq.clock()
        for f in parsed:
            sf.put_flow(self.store, f.name, f.source, now)
        return parsed

    def _audience_check(self, name: str, path: str) -> None:
        from .crm import Crm, NotFound

        try:
            Crm(self.hq).definition(name)
        except NotFound as e:
            raise FlowError(f"{path}: {e}") from None

    def active(self) -> list[Flow]:
        """The stored flows that are not paused."""
        return [parse_flow(r["source"], r["name"]) for r in sf.flows(self.store) if not r["paused"]]

    def all_flows(self) -> dict[str, Flow]:
        """Every stored flow by name."""
        return {r["name"]: parse_flow(r["source"], r["name"]) for r in sf.flows(self.store)}

    # -- the tick ------------------------------------------------------------------------

    def tick(self, now: dt.datetime | None = None, *, workers: int = 1) -> TickResult:
        """Schedule (if this process gets the lease), then send everything due."""
        now = now or self.hq.clock()
        result = TickResult()
        self.schedule(now, result)
        self.send_due(now, result, workers=workers)
        return result

    def schedule(self, now: dt.datetime, result: TickResult) -> None:
        """Evaluate every active flow and queue who is due; skipped while another holds the lease."""
        if not sf.take_lease(self.store, self.worker, now, now + self.config.lease):
            return
        result.scheduled = True
        try:
            program = self.hq.program()
            default = program.timezone if program else DEFAULT_ZONE
            groups = self._zone_groups(default)
            flows = self.active()
            result.flows = len(flows)
            # Flows are independent (their own keys): on PostgreSQL they are evaluated side by
            # side on pooled connections; SQLite has one connection, so one after another.
            threads = min(4, len(flows)) if type(self.store).__name__ == "PgHqStore" else 1
            parts = [TickResult() for _ in flows]
            if threads > 1:
                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hq-flow") as pool:
                    for f in [pool.submit(self._schedule_flow, fl, now, groups, program, part)
                              for fl, part in zip(flows, parts, strict=True)]:
                        f.result()
            else:
                for fl, part in zip(flows, parts, strict=True):
                    self._schedule_flow(fl, now, groups, program, part)
            for part in parts:
                result.add(part)
            # The tills' segment tags (docs/HQ.md "Tags for the tills"), once per store day.
            from .tags import refresh_if_due

            refresh_if_due(self.hq, now)
        finally:
            sf.release_lease(self.store, self.worker)

    def _zone_groups(self, default: str) -> list[tuple[str, str, list[Any]]]:
        """(zone, condition on m.store, params) covering every member once."""
        by_zone: dict[str, list[str]] = {}
        for s in sf.member_stores(self.store):
            if s is not None:
                by_zone.setdefault(self.config.zone_of(s, default), []).append(s)
        others = sorted(s for z, ss in by_zone.items() if z != default for s in ss)
        out: list[tuple[str, str, list[Any]]] = []
        if others:
            cond, params = self.store._any("m.store", others)
            out.append((default, f"(m.store IS NULL OR NOT ({cond}))", params))
        else:
            out.append((default, "1 = 1", []))
        for zone, stores in sorted(by_zone.items()):
            if zone != default:
                cond, params = self.store._any("m.store", sorted(stores))
                out.append((zone, cond, params))
        return out

    def _schedule_flow(self, flow: Flow, now: dt.datetime, groups: list[tuple[str, str, list[Any]]],
                       program: Any, result: TickResult) -> None:
        recent = sf.recent_members(self.store, flow.name, now - flow.once_per)
        # A flow's own holdout wins; else hq.toml's; else the default (10 %).
        share = flow.holdout if "holdout" in flow.source or self.config.holdout is None else self.config.holdout
        todo: list[tuple[Any, ...]] = []
        held: list[tuple[Any, ...]] = []
        tiers: list[tuple[str, str, str]] = []
        seen = sf.seen_tiers(self.store, flow.name) if flow.trigger.kind == "tier_changed" else {}
        ranks = {t.id: i for i, t in enumerate(program.tiers)} if program else {}
        due_at = sf.ts(now + flow.delay)
        created = sf.ts(now)
        for zone, zcond, zparams in groups:
            today = now.astimezone(ZoneInfo(zone)).date()
            day = epoch_day(today)
            for cand, occurrence in self._due(flow, zone, today, zcond, zparams, program):
                if flow.trigger.kind == "tier_changed":
                    before = seen.get(cand.member)
                    tiers.append((cand.member, flow.name, cand.value))
                    if before is None or ranks.get(cand.value, -1) <= ranks.get(before, -1):
                        continue
                if cand.member in recent:
                    continue
                recent.add(cand.member)
                out = held if held_out(flow.name, cand.member, share) else todo
                out.append((flow.name, cand.member, occurrence, message_ref(flow.name, cand.member, occurrence),
                            cand.store, zone, day, created, due_at, "held_out" if out is held else "todo",
                            "holdout" if out is held else None, created))
        result.due += sf.queue(self.store, todo, tiers)
        n_held = sf.queue(self.store, held)
        result.held_out += n_held
        result.due += n_held

    def _due(self, flow: Flow, zone: str, today: dt.date, zcond: str, zparams: list[Any],
             program: Any) -> list[tuple[sf.Candidate, str]]:
        """Members a flow's trigger selects in one zone today, with their occurrence keys."""
        from . import segment_sql

        d = epoch_day(today)
        size = program.card.size if program else 10
        months = program.expiry.months if program else 0
        asof = AsOf(today, zone, size, months)
        dialect = segment_sql.dialect_of(self.store)
        kind, value = flow.trigger.kind, flow.trigger.value
        latest = "JOIN predictions p ON p.member = m.member AND p.run = (SELECT max(run) FROM prediction_runs " \
                 "WHERE complete = 1)"
        join, select = "", "NULL, NULL"
        params: list[Any] = []
        if kind == "lapsed_days":
            # Catch-up of a week: a tick missed on the day itself still finds the member.
            cond, params, select = "m.last_day IS NOT NULL AND m.last_day <= ? AND m.last_day >= ?", \
                [d - value, d - value - 7], "m.last_day, NULL"
        elif kind == "birthday_in_days":
            target = today + dt.timedelta(days=value)
            days = AsOf(target, zone).birthdays(1)
            incond, inparams = self.store._any("substr(m.birthday, 6, 5)", days)
            cond, params = f"m.birthday IS NOT NULL AND {incond}", inparams
            select = "NULL, NULL"
        elif kind == "reorder_due":
            join, select = latest, "p.reorder_day, NULL"
            cond, params = "p.reorder_day IS NOT NULL AND p.reorder_day <= ? AND p.reorder_day >= ?", [d, d - 7]
        elif kind == "card_almost_full":
            mod = "mod(mod(m.balance, ?) + ?, ?)" if dialect == "pg" else "((m.balance % ?) + ?) % ?"
            cond, params = f"{mod} >= ?", [size, size, size, max(1, size - value)]
            select = "m.balance, NULL"
        elif kind == "stamps_expiring_within_days":
            cond = "1 = 1"  # the segment leaf below selects them
        elif kind == "enrolled":
            cond, params = "m.enrolled_day IS NOT NULL AND m.enrolled_day >= ? AND m.enrolled_day <= ?", [d - 7, d]
        elif kind == "tier_changed":
            cond, select = "m.tier IS NOT NULL", "m.tier, NULL"
        elif kind == "p_visit_14d_below":
            join, select = latest, "p.run, NULL"
            cond, params = "p.p_visit_14d < ?", [value]
        else:  # pragma: no cover - parse_flow refuses others
            raise FlowError(f"unknown trigger {kind}")
        cond = f"({zcond}) AND ({cond})"
        params = [*zparams, *params]
        # The expiring-stamps leaf and the audience compile as one segment, so their joins get
        # distinct aliases; join parameters come before every WHERE parameter in the SQL text.
        nodes: list[Any] = [StampsExpiring(value)] if kind == "stamps_expiring_within_days" else []
        if flow.audience is not None:
            from .crm import Crm

            nodes.append(Crm(self.hq).definition(flow.audience).root)
        if nodes:
            from .segments import All

            compiled = segment_sql.compile_segment(All(tuple(nodes)), asof, dialect)
            k = compiled.join_params
            join += compiled.joins
            cond += f" AND ({compiled.sql})"
            params = [*compiled.params[:k], *params, *compiled.params[k:]]
        out = []
        for cand in sf.candidates(self.store, cond, params, select, join):
            if kind == "lapsed_days":
                occ = f"lapsed:{cand.value}"
            elif kind == "birthday_in_days":
                occ = f"birthday:{(today + dt.timedelta(days=value)).year}"
            elif kind == "reorder_due":
                occ = f"reorder:{cand.value}"
            elif kind == "card_almost_full":
                occ = f"card:{int(cand.value) // size}"
            elif kind == "stamps_expiring_within_days":
                occ = f"expiring:{d}"
            elif kind == "enrolled":
                occ = "welcome"
            elif kind == "tier_changed":
                occ = f"tier:{cand.value}:{d}"
            else:
                occ = f"pvisit:run{cand.value}"
            out.append((cand, occ))
        return out

    # -- sending -------------------------------------------------------------------------

    def send_due(self, now: dt.datetime, result: TickResult, *, workers: int = 1) -> None:
        """Send every due message: recover stalled rows, then claim and send batch by batch."""
        back, lost = sf.recover_stalled(self.store, now)
        result.requeued += back
        result.unknown += lost
        if workers <= 1:
            self._work(self.worker, now, result)
            return
        parts = [TickResult() for _ in range(workers)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hq-send") as pool:
            futures = [pool.submit(self._work, f"{self.worker}.{i}", now, parts[i]) for i in range(workers)]
            for f in futures:
                f.result()
        for p in parts:
            result.add(p)

    def _work(self, worker: str, now: dt.datetime, result: TickResult) -> None:
        flows = self.all_flows()
        paused = {r["name"] for r in sf.flows(self.store) if r["paused"]}
        n = self.config.connections
        if n <= 1:
            while (ready := self._next(worker, flows, paused, now, result)) is not None:
                self._finish(worker, ready, (self._call(ch, out) for _, ch, out in ready), now, result)
            return
        # Provider calls overlap on `connections` threads, and the next batch is claimed and
        # decided while this one's calls are out. The database stays with this thread: claims,
        # decisions and outcomes keep their own transactions and their order.
        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="hq-call")
        try:
            ready = self._next(worker, flows, paused, now, result)
            while ready is not None:
                calls = [pool.submit(self._call, ch, out) for _, ch, out in ready]
                upcoming = self._next(worker, flows, paused, now, result)
                self._finish(worker, ready, (f.result() for f in calls), now, result)
                ready = upcoming
        finally:
            pool.shutdown(wait=True)

    def _next(self, worker: str, flows: dict[str, Flow], paused: set[str], now: dt.datetime,
              result: TickResult) -> list[tuple[int, str, Outgoing]] | None:
        """Claim a batch and decide it: the messages committed to be sent (None: nothing due)."""
        batch = sf.claim(self.store, worker, now, now + self.config.lease, self.config.batch)
        return self._decide(worker, batch, flows, paused, now, result) if batch else None

    def _finish(self, worker: str, ready: list[tuple[int, str, Outgoing]],
                outcomes: Iterable[SendResult | ChannelError], now: dt.datetime, result: TickResult) -> None:
        """Record each call's outcome, in order; sent ones `record_every` at a time."""
        sent: list[tuple[int, str]] = []
        for (msg_id, channel, out), outcome in zip(ready, outcomes, strict=True):
            got = self._record(worker, msg_id, channel, out, outcome, now, result)
            if got is not None:
                sent.append((msg_id, got))
            if len(sent) >= self.config.record_every:
                sf.record_sent(self.store, worker, sent, now)
                sent = []
        sf.record_sent(self.store, worker, sent, now)

    def _decide(self, worker: str, batch: list[dict[str, Any]], flows: dict[str, Flow], paused: set[str],
                now: dt.datetime, result: TickResult) -> list[tuple[int, str, Outgoing]]:
        cfg = self.config
        decisions: list[sf.Decision] = []
        ready: dict[int, tuple[str, Outgoing]] = {}
        products = self._products(batch, flows)
        program = self.hq.program()  # read before the transaction: SQLite has one per connection
        size = program.card.size if program else 10
        with self.store._tx() as c:
            contacts, caps = sf.contacts_and_caps(self.store, c, sorted({m["member"] for m in batch}),
                                                  now - cfg.cap_window)
            for msg in batch:
                mid = int(msg["id"])
                flow = flows.get(msg["flow"])
                contact = contacts.get(msg["member"])
                if flow is None:
                    decisions.append(sf.Decision(mid, "skipped", "flow_deleted"))
                    continue
                if flow.name in paused:  # queued messages of a paused flow wait for its resume
                    decisions.append(sf.Decision(mid, "todo", "paused", due_at=now + _PAUSED_RETRY))
                    continue
                if contact is None or contact["erased"] or contact["merged_into"]:
                    decisions.append(sf.Decision(mid, "skipped", "erased"))
                    result.skipped["erased"] += 1
                    continue
                if cfg.quiet is not None:
                    local = now.astimezone(ZoneInfo(msg["zone"]))
                    if cfg.quiet.contains(local.time()):
                        decisions.append(sf.Decision(mid, "todo", "quiet_hours",
                                                     due_at=cfg.quiet.next_end(local).astimezone(dt.UTC)))
                        result.skipped["quiet_hours"] += 1
                        continue
                channel = self._channel(flow, contact)
                if channel is None:
                    decisions.append(sf.Decision(mid, "skipped", "no_consent"))
                    result.skipped["no_consent"] += 1
                    continue
                if caps.get(msg["member"], 0) >= cfg.cap:
                    decisions.append(sf.Decision(mid, "skipped", "capped"))
                    result.skipped["capped"] += 1
                    continue
                try:
                    out = self._render(flow, channel, msg, contact, products.get(msg["member"]), size)
                except (TemplateError, KeyError) as e:
                    decisions.append(sf.Decision(mid, "failed", "template", error=str(e)[:500]))
                    result.failed += 1
                    continue
                caps[msg["member"]] = caps.get(msg["member"], 0) + 1
                decisions.append(sf.Decision(mid, "commit", channel=channel))
                ready[mid] = (channel, out)
            committed = sf.apply_decisions(self.store, c, worker, decisions, now)
        return [(mid, ch, out) for mid, (ch, out) in sorted(ready.items()) if mid in committed]

    def _channel(self, flow: Flow, contact: dict[str, Any]) -> str | None:
        """The first channel of the flow that is configured, consented to and reachable."""
        for ch in flow.channels:
            if ch not in self.channels or not contact.get(f"consent_{ch}"):
                continue
            if contact.get("email" if ch == "email" else "phone"):
                return ch
        return None

    def _products(self, batch: list[dict[str, Any]], flows: dict[str, Flow]) -> dict[str, str]:
        """A recommended product per member, read only for flows whose templates use it."""
        wanted = sorted({m["member"] for m in batch if m["flow"] in flows
                         and "product" in str(flows[m["flow"]].source)})
        out: dict[str, str] = {}
        for member in wanted:
            p = self.store.member_prediction(member)
            skus = (p or {}).get("skus") or []
            if skus:
                first = skus[0]
                out[member] = str(first.get("name") or first.get("sku")) if isinstance(first, dict) else str(first)
        return out

    def _render(self, flow: Flow, channel: str, msg: dict[str, Any], contact: dict[str, Any],
                product: str | None, size: int) -> Outgoing:
        balance = int(contact["balance"] or 0)
        name = contact["name"] or ""
        ctx = {"name": name, "first_name": name.split(" ")[0] if name else "", "balance": balance,
               "card_size": size, "card_filled": balance % size, "stamps_to_go": size - balance % size,
               "tier": contact["tier"] or "", "store": contact["store"] or "", "product": product or "",
               "member": msg["member"], "flow": flow.name, "unsubscribe_url": ""}
        lang = flow.language
        if channel == "whatsapp":
            assert flow.whatsapp is not None
            wa = flow.whatsapp
            return Outgoing(msg["ref"], msg["member"], contact["phone"], wa.language, template=wa.template,
                            params=tuple(render(p, ctx) for p in wa.params))
        if channel == "email":
            url = unsubscribe_url(self.config.public_url, self.config.unsubscribe_secret, msg["member"], "email")
            ctx["unsubscribe_url"] = url
            t = flow.text("email", lang)
            return Outgoing(msg["ref"], msg["member"], contact["email"], lang, subject=render(t.subject or "", ctx),
                            body=render(t.body, ctx), unsubscribe_url=url)
        t = flow.text("sms", lang)
        return Outgoing(msg["ref"], msg["member"], contact["phone"], lang, body=render(t.body, ctx))

    def _call(self, channel: str, out: Outgoing) -> SendResult | ChannelError:
        """The provider call alone (no database: it may run on a calling thread); the result or
        the channel's error, to be recorded by the worker."""
        try:
            return retry_not_sent(sleep=self.sleep)(self.channels[channel].send, out)
        except ChannelError as e:
            return e

    def _record(self, worker: str, msg_id: int, channel: str, out: Outgoing, outcome: SendResult | ChannelError,
                now: dt.datetime, result: TickResult) -> str | None:
        """Records failures and unknowns at once and returns the provider's id of a sent
        message, which the caller records (alone or with the next few)."""
        if isinstance(outcome, SendResult):
            result.sent += 1
            return outcome.provider_id
        if isinstance(outcome, NotSent):
            # Nothing left: queue it again for later (a few times), never silently dropped.
            if sf.requeue(self.store, msg_id, worker, now + _RETRY_LATER, now, str(outcome)[:500], MAX_ATTEMPTS):
                result.requeued += 1
            else:
                result.failed += 1
            return None
        if isinstance(outcome, Rejected):
            sf.record_outcome(self.store, msg_id, worker, "failed", now, error=str(outcome)[:500])
            result.failed += 1
            if channel == "whatsapp" and outcome.code == STOPPED_MARKETING:
                sf.withdraw_consent(self.store, out.member, "whatsapp", f"whatsapp:{STOPPED_MARKETING}:{out.ref}",
                                    now)
            return None
        # MaybeSent, or any other channel error: it may have left, so `unknown`, never resent.
        sf.record_outcome(self.store, msg_id, worker, "unknown", now, error=str(outcome)[:500])
        result.unknown += 1
        return None

    def close(self) -> None:
        """Close the channels."""
        for ch in self.channels.values():
            ch.close()


class SchedulerLoop:
    """`hq serve --config`: a thread that runs a tick every `interval_s` until stopped."""

    def __init__(self, engine: FlowEngine, interval_s: float = 60.0, workers: int = 1):
        self.engine = engine
        self.interval_s = interval_s
        self.workers = workers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: TickResult | None = None
        self.errors = 0

    def start(self) -> None:
        """Start ticking in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="hq-flows", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import logging

        log = logging.getLogger("tillstamp.flows")
        while not self._stop.is_set():
            try:
                self.last = self.engine.tick(workers=self.workers)
            except Exception:  # one bad tick is logged and retried next time; the lease protects overlap
                self.errors += 1
                log.exception("flow tick failed")
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop after the current tick."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


__all__ = ["FlowEngine", "SchedulerLoop", "TickResult"]
