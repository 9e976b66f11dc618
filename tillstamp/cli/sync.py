"""`tillstamp sync push|pull|status|enroll`: the till's side of head office."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from .base import COMMON, Parser, UsageError, data_arg, emit, wants_json

if TYPE_CHECKING:
    from ..agent.till import Till
    from ..sync.client import SyncClient
    from ..sync.errors import SyncError

BATCH_DEFAULT = 10_000  # the till client's MAX_EVENTS, written out so --help imports nothing


def _refused(e: SyncError) -> UsageError:
    return UsageError(f"head office refused: {e}")


def _client(till: Till, args: argparse.Namespace) -> SyncClient:
    from ..agent.sync_store import client_for
    from ..sync.client import RetryPolicy

    if till.sync is None:
        raise UsageError("this till is not enrolled with head office (tillstamp sync enroll --hq URL --code CODE)")
    policy = RetryPolicy(attempts=args.attempts, timeout_s=args.timeout, max_wait_s=min(60.0, args.timeout))
    return client_for(till.store, till.keys, till.sync, till.config.hq_url, policy=policy,
                      max_events=args.batch or BATCH_DEFAULT)


def cmd_push(args: argparse.Namespace) -> int:
    from ..agent.till import open_till
    from ..sync import errors

    with open_till(data_arg(args)) as till:
        client = _client(till, args)
        try:
            report = client.push(retry_parked=args.retry_parked)
        except (errors.Rejected, errors.Parked) as e:
            raise _refused(e) from None
        except errors.Retryable as e:
            sync = till.sync
            assert sync is not None
            waiting = sync.last_seq() - sync.acked()
            # Say first that head office was not reached: "acked N" alone reads like a success.
            _not_reached(args, till, e, f"nothing pushed; {waiting} events wait for the next push "
                         f"(head office held {sync.acked()} at the last contact)",
                         acked=sync.acked(), waiting=waiting)
            return 1
        emit(args, report.to_dict(), lambda d: "pushed {pushed}, acked {acked}, waiting {waiting}".format(**d))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from ..agent.till import open_till
    from ..sync import errors

    with open_till(data_arg(args)) as till:
        client = _client(till, args)
        try:
            report = client.pull()
        except errors.Rejected as e:
            raise _refused(e) from None
        except errors.Retryable as e:
            _not_reached(args, till, e, "nothing pulled")
            return 1
        emit(args, report.to_dict(), lambda d: "pulled {changes} changes in {pages} pages".format(**d))
    return 0


def _not_reached(args: argparse.Namespace, till: Till, e: Exception, what: str, **data: Any) -> None:
    """Head office did not answer: a plain line on stderr (and JSON on stdout with --json)."""
    message = f"head office not reached at {till.config.hq_url} ({e}): {what}"
    if wants_json(args):
        emit(args, {"error": "offline", "reached": False, "message": message, **data}, str)
    print(f"tillstamp: {message}", file=sys.stderr, flush=True)


def cmd_status(args: argparse.Namespace) -> int:
    from ..agent.till import open_till

    with open_till(data_arg(args)) as till:
        if till.sync is None:
            raise UsageError("this till is not enrolled with head office")
        emit(args, till.sync.status(till.program.offline), _human_status)
    return 0


def _human_status(d: dict[str, Any]) -> str:
    x = d["exposure"]
    return "\n".join([
        f"terminal {d['terminal']} -> {d['hq']}",
        f"  events waiting {d['waiting']} (acked {d['acked']} of {d['last_seq']})",
        f"  last success {d['last_success'] or 'never'}, clock offset {d['clock_offset_s']:+.1f}s",
        (f"  offline exposure: {x['redeemed_blind']} stamps redeemed since last sync "
         f"(worst case {x['worst_overdraft_per_member']} per member, {x['worst_overdraft_total']} in all)"),
    ] + ([f"  PARKED: {d['parked']['code']}: {d['parked']['message']}"] if d["parked"] else []))


def cmd_enroll(args: argparse.Namespace) -> int:
    from ..agent.enroll import enroll_existing

    out = enroll_existing(data_arg(args), hq=args.hq, code=args.code)
    emit(args, out, lambda d: "enrolled {terminal} of store {store} with {hq}".format(**d))
    return 0


def register(sub: Any) -> None:
    """Add `tillstamp sync ...` to the CLI."""
    group = sub.add_parser("sync", help="push events to head office and pull its changes").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    for name, func, text in (("push", cmd_push, "send waiting events to head office"),
                             ("pull", cmd_pull, "apply head office's changes (members, program, keys)")):
        p = group.add_parser(name, parents=[COMMON], help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--attempts", type=int, default=4, help="tries per request before giving up (default 4)")
        p.add_argument("--timeout", type=float, default=30.0, help="hard limit per request, seconds (default 30)")
        p.add_argument("--batch", type=int, default=None,
                       help=f"most events per batch (default {BATCH_DEFAULT}; a batch also stops at 4 MiB)")
        if name == "push":
            p.add_argument("--retry-parked", action="store_true", help="retry a batch head office refused before")
        p.set_defaults(func=func)
    p = group.add_parser("status", parents=[COMMON], help="waiting events, last sync, clock offset, offline exposure",
                         description="Show what waits to sync, the last success, the clock offset and the "
                                     "current offline exposure.")
    p.set_defaults(func=cmd_status)
    p = group.add_parser("enroll", parents=[COMMON], help="enrol this (standalone) till with head office",
                         description="Enrol a till that ran alone; it keeps its ids, ledger and members.")
    p.add_argument("--hq", required=True, help="head office URL")
    p.add_argument("--code", required=True, help="one-time code from `tillstamp hq terminal add`")
    p.set_defaults(func=cmd_enroll)
