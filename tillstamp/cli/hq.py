"""`tillstamp hq ...`: head office commands (serve, terminal add, program set, stats, erase,
revoke, alerts); errors print one line on stderr and exit 2 like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..loyalty.program import ProgramError

if TYPE_CHECKING:
    from ..hq.service import Hq

DEFAULT_DB = "sqlite:///hq.db"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", default=DEFAULT_DB, help=f"HQ database URL: sqlite:///REL, sqlite:////ABS or postgresql://... "
                                                    f"(default {DEFAULT_DB})")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    return p


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str) if getattr(args, "json", False) else human, flush=True)


def _fail(message: str) -> int:
    print(f"tillstamp: {message}", file=sys.stderr, flush=True)
    return 2


def _hq(args: argparse.Namespace) -> Hq:
    from ..hq.service import Hq
    from ..hq.store import open_hq_store

    return Hq(open_hq_store(args.db))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..hq.app import create_app

    hq = _hq(args)
    hq.signing_key()
    uvicorn.run(create_app(hq), host=args.host, port=args.port, log_level=args.log_level)
    hq.store.close()
    return 0


def cmd_terminal_add(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        code = hq.new_code(args.store, args.terminal)
    except ValueError as e:
        return _fail(str(e))
    finally:
        hq.store.close()
    _emit(args, {"code": code, "store": args.store, "terminal": args.terminal},
          f"enrolment code for store {args.store}: {code}")
    return 0


def cmd_program_set(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        return _fail(f"{path}: no such program file")
    hq = _hq(args)
    try:
        from ..hq.service import load_json_or_toml

        version = hq.publish_program(load_json_or_toml(path.read_text(encoding="utf-8")))
    except (ProgramError, ValueError) as e:
        return _fail(f"{path}: {e}")
    finally:
        hq.store.close()
    _emit(args, {"version": version}, f"program version {version} published")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        stats = hq.stats()
    finally:
        hq.store.close()
    lines = [(f"events {stats['events']}, sales {stats['sales']}, members {stats['members']}, "
              f"quarantined {stats['quarantined']}, alerts {stats['alerts']}")]
    lines += [f"  {t['terminal']:<16} store {t['store']:<10} acked {t['acked']:>8}  last seen {t['last_seen']}  "
              f"clock {t['clock_offset_s']}" for t in stats["terminals"]]
    _emit(args, stats, "\n".join(lines))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        alerts = hq.store.alerts()
    finally:
        hq.store.close()
    _emit(args, alerts, "\n".join(f"{a['at'][:19]} {a['kind']:<10} {a['terminal'] or '-'} {a['member'] or '-'} "
                                  f"{json.dumps(a['detail'])}" for a in alerts) or "no alerts")
    return 0


def cmd_erase(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        hq.store.erase(args.member, hq.clock())
    finally:
        hq.store.close()
    _emit(args, {"erased": args.member}, f"member {args.member} erased")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        now = hq.clock()
        hq.store.revoke(args.member, now, now)
    finally:
        hq.store.close()
    _emit(args, {"revoked": args.member}, f"cards of member {args.member} issued until now are revoked")
    return 0


def register(sub: Any) -> None:
    """Add `tillstamp hq ...` to the CLI."""
    common = _common()
    hq = sub.add_parser("hq", help="head office: sync endpoint, terminals, program").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = hq.add_parser("serve", parents=[common], help="run the HQ sync endpoint (HTTP)",
                      description="Serve the sync API (OpenAPI at /docs).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=cmd_serve)

    from . import hq_predict

    hq_predict.register(hq, common)

    term = hq.add_parser("terminal", help="enrol terminals").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = term.add_parser("add", parents=[common], help="issue a one-time enrolment code for a store",
                        description="Issue a one-time code; the till uses it with `tillstamp init --hq URL "
                                    "--code CODE` or `tillstamp sync enroll`.")
    p.add_argument("--store", required=True, help="the store the till belongs to")
    p.add_argument("--terminal", help="fix the terminal id (default: HQ assigns STORE-Tn, or the till keeps its own)")
    p.set_defaults(func=cmd_terminal_add)

    prog = hq.add_parser("program", help="publish the loyalty program").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = prog.add_parser("set", parents=[common], help="publish a new program version from a TOML file",
                        description="Validate and publish a program; tills receive it on their next pull.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_program_set)

    p = hq.add_parser("stats", parents=[common], help="events, sales, quarantine and terminals",
                      description="Counts and per-terminal sync state.")
    p.set_defaults(func=cmd_stats)
    p = hq.add_parser("alerts", parents=[common], help="overdrafts and quarantines found at ingest",
                      description="List alerts raised by ingest.")
    p.set_defaults(func=cmd_alerts)
    p = hq.add_parser("erase", parents=[common], help="erase a member's personal data everywhere",
                      description="Scrub a member's PII at HQ and, through the feed, at every till.")
    p.add_argument("member")
    p.set_defaults(func=cmd_erase)
    p = hq.add_parser("revoke", parents=[common], help="revoke a member's cards issued until now",
                      description="Revoke every card of the member issued until now.")
    p.add_argument("member")
    p.set_defaults(func=cmd_revoke)
