"""Print tap commands for the `tillstamp` CLI: `tap parse` and `tap run`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .base import COMMON, Parser, UsageError, data_arg, emit


def _human(d: dict[str, Any]) -> str:
    head = f"receipt {d['receipt']}  {d['at'] or '(no date)'}  total {d['total']}  [{d['template']}]"
    lines = [f"  {ln['qty']} x {ln['name']:<30} {ln['amount']:>10}" for ln in d["lines"]]
    pays = [f"  paid {p['method']}: {p['amount']}" for p in d["payments"]]
    return "\n".join([head, *lines, *pays])


def _human_job(d: dict[str, Any]) -> str:
    if not d["parsed"]:
        return f"job {d['job']}: {d['bytes_in']} bytes printed unchanged ({d['error'] or 'not a receipt'})"
    what = ("duplicate, nothing added" if d["duplicate"] else
            f"+{d['stamps']} stamps for {d['member']}" if d["member"] else
            "claim QR added" if d["inserted"] else "nothing to add")
    printed = "printed" if d["printed"] else ("spooled" if d["spooled"] else "NOT printed")
    return f"job {d['job']}: receipt {d['receipt']} total {d['total']}: {what}; {printed}"


def cmd_tap_parse(args: argparse.Namespace) -> int:
    """`tillstamp tap parse FILE.bin`: what a template reads from a print job."""
    from ..tap import NoMatch, TemplateError
    from ..tap.extract import parse_job

    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UsageError(f"tap parse: {path}: {e.strerror}") from None
    try:
        parsed = parse_job(data, args.template)
    except TemplateError as e:
        raise UsageError(f"tap parse: {e}") from None
    except NoMatch as e:
        raise UsageError(f"tap parse: {path}: no template read a receipt ({e})") from None
    emit(args, parsed.to_dict(), _human)
    return 0


def cmd_tap_run(args: argparse.Namespace) -> int:
    """`tillstamp tap run`: proxy the POS's print jobs to the printer until interrupted."""
    from ..agent.till import open_till
    from ..drivers.errors import DeviceConfigError
    from ..tap import TapConfig, TapServer, TemplateError, resolve_templates
    from ..tap.record import service_record
    from ..tap.server import TapConfigError

    try:
        templates = resolve_templates(args.template)
    except TemplateError as e:
        raise UsageError(f"tap run: {e}") from None
    data = data_arg(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    out_lock = threading.Lock()

    def on_job(report: dict[str, Any]) -> None:
        with out_lock:  # sessions run in several threads; one line each, never interleaved
            emit(args, report, _human_job)

    with open_till(data) as till:
        cfg = TapConfig(listen=args.listen, printer=args.printer, folder=data / "tap",
                        templates=templates, language=till.config.language,
                        allow=tuple(args.allow or ()))
        # The tap's single record worker makes every Service call, one at a time.
        server = TapServer(cfg, service_record(till.service), on_job=on_job)
        try:
            server.start()
        except (DeviceConfigError, TapConfigError) as e:
            raise UsageError(f"tap run: {e}") from None
        except OSError as e:
            raise UsageError(f"tap run: cannot listen on {args.listen}: {e.strerror}") from None
        print(f"tillstamp tap on {server.url} -> {args.printer}", file=sys.stderr, flush=True)
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: done.set())
        try:
            done.wait()
        finally:
            server.stop()
    return 0


def register(subparsers: Any) -> None:
    """Add `tap parse` and `tap run` to the CLI."""
    tap = subparsers.add_parser(
        "tap", help="the print tap: loyalty for a POS that can only print",
        description="A transparent ESC/POS proxy between the POS and its receipt printer.",
    ).add_subparsers(dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = tap.add_parser("parse", parents=[COMMON], help="show what a template reads from a print job",
                       description="Decode an ESC/POS job and print what the template reads: receipt, "
                                   "time, lines, total (minor units). Exit 2 when no template matches.")
    p.add_argument("file", metavar="FILE.bin", help="a raw print job (e.g. one kept in DATA/tap/jobs)")
    p.add_argument("--template", metavar="NAME|FILE", help="a shipped template's name or a .toml file "
                   "(default: try every shipped template)")
    p.set_defaults(func=cmd_tap_parse)
    p = tap.add_parser("run", parents=[COMMON], help="proxy print jobs to the printer, recording sales",
                       description="Listen where the POS prints, forward every job to the printer, record "
                                   "each receipt once and print the loyalty block into it. One JSON line "
                                   "per job on stdout.")
    p.add_argument("--listen", required=True, metavar="URL",
                   help="tcp://127.0.0.1:9100 (a POS on this machine), tcp://0.0.0.0:9100 with --allow, "
                        "or serial:///dev/ttyS1")
    p.add_argument("--allow", action="append", metavar="ADDR",
                   help="a POS address or network that may print (repeat); required beyond loopback")
    p.add_argument("--printer", required=True, metavar="URL",
                   help="the real printer: escpos+tcp://HOST:9100, escpos+serial:///dev/ttyS0, file:///path")
    p.add_argument("--template", metavar="NAME|FILE", help="template name or .toml file (default: all shipped)")
    p.set_defaults(func=cmd_tap_run)
