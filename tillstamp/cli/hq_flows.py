"""`tillstamp hq flow ...` and `tillstamp hq messages`: automation flows, their ticks and
reports, and what was sent to a member. Library code is imported inside each command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import emit_text as _emit
from .base import fail as _fail

if TYPE_CHECKING:
    from ..hq.messaging import MessagingConfig
    from ..hq.scheduler import FlowEngine, SchedulerLoop
    from ..hq.service import Hq


def _now(text: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time with offset, got {text!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (e.g. 2026-03-02T10:00:00+07:00)")
    return t


def _hq(args: argparse.Namespace) -> Hq:
    from ..hq.service import Hq
    from ..hq.store import open_hq_store

    now = getattr(args, "now", None)
    hq = Hq(open_hq_store(args.db))
    if now is not None:
        hq.clock = lambda: now
    return hq


def _engine(args: argparse.Namespace, hq: Hq) -> FlowEngine:
    from ..hq.messaging import MessagingConfig, load_config
    from ..hq.scheduler import FlowEngine

    config = load_config(args.config) if getattr(args, "config", None) else MessagingConfig()
    return FlowEngine(hq, config)


def _run(args: argparse.Namespace, body: Any, *, engine: bool = True) -> int:
    """Run `body(engine_or_hq)`: a refusal is one line on stderr and exit 2, nothing written."""
    from ..hq.flows import FlowError
    from ..hq.messaging import ConfigError

    try:
        hq = _hq(args)
    except ValueError as e:
        return _fail(str(e))
    try:
        target = _engine(args, hq) if engine else hq
        return int(body(target))
    except (FlowError, ConfigError) as e:
        return _fail(str(e))
    finally:
        hq.store.close()


def cmd_set(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"{path}: no such flows file")

    def body(eng: FlowEngine) -> int:
        flows = eng.set_flows(path.read_text(encoding="utf-8"), str(path))
        names = [f.name for f in flows]
        _emit(args, {"flows": names}, f"{len(names)} flow(s) saved: {', '.join(names)}")
        return 0
    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(hq: Hq) -> int:
        from ..hq import store_flows as sf

        rows = sf.flows(hq.store)
        out = [{"name": r["name"], "paused": r["paused"], "version": r["version"], "updated_at": r["updated_at"],
                "trigger": r["source"].get("trigger"), "channels": r["source"].get("channels")} for r in rows]
        _emit(args, out, "\n".join(f"{r['name']:<24} {'paused' if r['paused'] else 'active':<7} "
                                   f"{json.dumps(r['trigger'])} {','.join(r['channels'] or [])}" for r in out)
              or "no flows")
        return 0
    return _run(args, body, engine=False)


def cmd_show(args: argparse.Namespace) -> int:
    def body(hq: Hq) -> int:
        from ..hq import store_flows as sf

        found = [r for r in sf.flows(hq.store) if r["name"] == args.name]
        if not found:
            return _fail(f"flow {args.name!r} not found (see `hq flow list`)")
        out = {**found[0], "messages": sf.state_counts(hq.store, args.name)}
        _emit(args, out, json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    return _run(args, body, engine=False)


def _pause(args: argparse.Namespace, paused: bool) -> int:
    def body(hq: Hq) -> int:
        from ..hq import store_flows as sf

        if not sf.set_paused(hq.store, args.name, paused, hq.clock()):
            return _fail(f"flow {args.name!r} not found (see `hq flow list`)")
        _emit(args, {"name": args.name, "paused": paused}, f"flow {args.name} {'paused' if paused else 'resumed'}")
        return 0
    return _run(args, body, engine=False)


def cmd_pause(args: argparse.Namespace) -> int:
    return _pause(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _pause(args, False)


def cmd_run(args: argparse.Namespace) -> int:
    def body(eng: FlowEngine) -> int:
        try:
            result = eng.tick(args.now, workers=args.workers)
        finally:
            eng.close()
        out = result.to_json()
        sk = out["skipped"]
        _emit(args, out, f"due {out['due']}, sent {out['sent']}, held out {out['held_out']}, failed {out['failed']}, "
                         f"unknown {out['unknown']}, skipped: no consent {sk['no_consent']}, quiet hours "
                         f"{sk['quiet_hours']}, capped {sk['capped']}, erased {sk['erased']}"
                         + ("" if out["scheduled"] else " (another tick held the lease: only sending)"))
        return 0
    return _run(args, body)


def cmd_report(args: argparse.Namespace) -> int:
    def body(hq: Hq) -> int:
        from ..hq import store_flows as sf
        from ..hq.flow_report import flow_report

        if not any(r["name"] == args.name for r in sf.flows(hq.store)):
            return _fail(f"flow {args.name!r} not found (see `hq flow list`)")
        rep = flow_report(hq.store, args.name, args.window)
        t, h, d = rep["treated"], rep["held_out"], rep["difference"]["visit_share"]
        human = (f"{args.name}: treated {t['members']} (visited {t['visit_share']:.1%}), held out {h['members']} "
                 f"(visited {h['visit_share']:.1%})"
                 + (f"; difference {d['difference']:+.1%} [{d['ci95'][0]:+.1%}, {d['ci95'][1]:+.1%}]" if d else ""))
        _emit(args, rep, human)
        return 0
    return _run(args, body, engine=False)


def cmd_messages(args: argparse.Namespace) -> int:
    def body(hq: Hq) -> int:
        from ..hq import store_flows as sf

        rows = sf.member_messages(hq.store, args.member)
        _emit(args, rows, "\n".join(f"{r['created_at'][:19]} {r['flow']:<20} {r['state']:<9} {r['channel'] or '-':<9} "
                                    f"{r['reason'] or ''}" for r in rows) or "no messages")
        return 0
    return _run(args, body, engine=False)


def start_scheduler(app: Any, hq: Hq, config: str | MessagingConfig, interval_s: float) -> SchedulerLoop:
    """For `hq serve --config`: give the app the messaging config (webhooks) and start ticking."""
    from ..hq.messaging import load_config
    from ..hq.scheduler import FlowEngine, SchedulerLoop

    if isinstance(config, str):
        config = load_config(config)
    app.state.messaging = config
    loop = SchedulerLoop(FlowEngine(hq, config), interval_s)
    loop.start()
    return loop


def register(hq: Any, common: argparse.ArgumentParser, parser_class: Any) -> None:
    """Add `hq flow ...` and `hq messages` under `tillstamp hq`."""
    flow = hq.add_parser("flow", help="automation flows: set, list, pause, run a tick, report").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", metavar="HQ_TOML", help="hq.toml with the channels and messaging rules")

    p = flow.add_parser("set", parents=[common, config], help="validate and save the flows of a TOML file",
                        description="Validate every [[flows]] table (errors name the key path) and save them; "
                                    "a flow of the same name is replaced, its paused state kept.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_set)
    p = flow.add_parser("list", parents=[common], help="every flow, active or paused",
                        description="List flows with their trigger and channels.")
    p.set_defaults(func=cmd_list)
    p = flow.add_parser("show", parents=[common], help="a flow's definition and its messages by state",
                        description="Show a flow's stored definition and how many messages are in each state.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_show)
    p = flow.add_parser("pause", parents=[common], help="stop a flow from queueing and sending",
                        description="Pause a flow: no new messages are queued and queued ones wait.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_pause)
    p = flow.add_parser("resume", parents=[common], help="let a paused flow run again",
                        description="Resume a paused flow.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_resume)
    p = flow.add_parser("run", parents=[common, config], help="run one tick: queue who is due, send what is due",
                        description="Evaluate every active flow (under the scheduler's lease) and send due "
                                    "messages at most once.")
    p.add_argument("--now", type=_now, metavar="ISO", help="the tick's time (default: now)")
    p.add_argument("--workers", type=int, default=1, help="sending workers (PostgreSQL: SKIP LOCKED claims)")
    p.set_defaults(func=cmd_run)
    p = flow.add_parser("report", parents=[common], help="treated vs held out: visits and spend after the trigger",
                        description="Compare members messaged with the holdout: share who visited and spend "
                                    "within the window after the trigger, with 95%% intervals.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--window", type=int, default=14, help="days after the trigger (default 14)")
    p.set_defaults(func=cmd_report)

    p = hq.add_parser("messages", parents=[common], help="what was sent to a member, when, how, status",
                      description="List a member's messages: flow, state, channel, times.")
    p.add_argument("--member", required=True, metavar="ID")
    p.set_defaults(func=cmd_messages)
