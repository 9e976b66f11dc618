"""`tillstamp hq ...`: head office commands (serve, terminal add, program set, stats, erase,
revoke, alerts, rebuild, verify, member show, import); errors print one line on stderr and
exit 2 like the rest of the CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..loyalty.program import ProgramError
from .base import emit_text as _emit
from .base import fail as _fail

if TYPE_CHECKING:
    from ..hq.service import Hq

DEFAULT_DB = "sqlite:///hq.db"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--db", default=DEFAULT_DB, help=f"HQ database URL: sqlite:///REL, sqlite:////ABS or postgresql://... "
                                                    f"(default {DEFAULT_DB})")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    return p


def _hq(args: argparse.Namespace) -> Hq:
    from ..hq.service import Hq
    from ..hq.store import open_hq_store

    return Hq(open_hq_store(args.db))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..hq.app import create_app
    from ..hq.messaging import ConfigError, load_config
    from ..hq.web.codes import web_config

    # One hq.toml, read once: the channels, the messaging rules and the customer pages' codes.
    try:
        messaging = load_config(args.config) if args.config else None
    except ConfigError as e:
        return _fail(str(e))
    web = web_config(messaging)
    hq = _hq(args)
    hq.signing_key()
    # Say where it listens before anything else: a server that prints nothing looks hung.
    print(f"tillstamp hq serving {_safe_db(args.db)} on http://{args.host}:{args.port}/ "
          f"(API docs at /docs)", file=sys.stderr, flush=True)
    app = create_app(hq, web)
    loop = None
    if messaging is not None:  # flows and channels: the scheduler runs inside the server
        from .hq_flows import start_scheduler

        loop = start_scheduler(app, hq, messaging, args.tick)
    # What is built by now (modules, the app) lives as long as the server. Frozen, it is out of
    # the collector's reach: a full collection during a push walks only the objects of the
    # pushes in flight, not some 78,000 startup objects each time (docs/SYNC.md).
    import gc

    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                access_log=True, log_config=_log_config(), proxy_headers=args.behind_proxy,
                forwarded_allow_ips="*" if args.behind_proxy else None)
    if loop is not None:
        loop.stop()
    hq.store.close()
    return 0


def _log_config() -> dict[str, Any]:
    """uvicorn's logging with the request lines on stderr too: stdout stays for results."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def _safe_db(url: str) -> str:
    """The database URL without its password, fit for a log line."""
    head, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    cred, _, host = rest.rpartition("@")
    return f"{head}{sep}{cred.split(':', 1)[0]}:***@{host}"


def cmd_terminal_list(args: argparse.Namespace) -> int:
    """`hq terminal list`: every enrolled terminal and its sync state."""
    hq = _hq(args)
    try:
        rows = [{"terminal": t.id, "store": t.store, "acked": t.acked, "last_seen": t.last_seen,
                 "clock_offset_s": t.clock_offset_s, "quarantined": t.quarantined}
                for t in hq.store.terminals()]
    finally:
        hq.store.close()
    _emit(args, rows, "\n".join(
        f"{r['terminal']:<16} store {r['store']:<10} acked {r['acked']:>8}  last seen "
        f"{r['last_seen'] or 'never'}" + ("  QUARANTINED" if r["quarantined"] else "")
        for r in rows) or "no terminals enrolled")
    return 0


def cmd_terminal_remove(args: argparse.Namespace) -> int:
    """`hq terminal remove ID`: the terminal can no longer push or pull; its events stay."""
    hq = _hq(args)
    try:
        removed = hq.store.remove_terminal(args.terminal)
    finally:
        hq.store.close()
    if not removed:
        return _fail(f"terminal {args.terminal}: not enrolled here")
    _emit(args, {"removed": args.terminal},
          f"terminal {args.terminal} removed: it can no longer sync (its events stay)")
    return 0


def cmd_program_show(args: argparse.Namespace) -> int:
    """`hq program show`: the program version tills receive now."""
    hq = _hq(args)
    try:
        got = hq.store.program()
    finally:
        hq.store.close()
    if got is None:
        return _fail("no program published yet (tillstamp hq program set FILE)")
    version, source = got
    head = source.get("program", {})
    rewards = ", ".join(f"{r.get('id')} ({r.get('cost')})" for r in source.get("rewards", []))
    _emit(args, {"version": version, "source": source},
          f"program version {version}: {head.get('name', '')}\n  rewards: {rewards or 'none'}")
    return 0


def cmd_terminal_add(args: argparse.Namespace) -> int:
    hq = _hq(args)
    try:
        code = hq.new_code(args.store, args.terminal, args.store_name)
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
    from ..hq.store import NotAMember
    from ..loyalty.phone import PhoneError, looks_like_phone, normalize_phone

    hq = _hq(args)
    try:
        member = args.member
        if looks_like_phone(member):
            try:
                member = hq.store.member_by_phone(normalize_phone(member)) or member
            except PhoneError as e:
                return _fail(f"hq erase: {e}")
        hq.store.erase(member, hq.clock())
    except NotAMember:
        return _fail(f"hq erase: {args.member!r} is not a member at head office (id or phone); "
                     "nothing was erased")
    finally:
        hq.store.close()
    _emit(args, {"erased": member}, f"member {member} erased")
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


def _bar() -> Any:
    """A rich progress bar on a terminal (stderr), None otherwise."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=True, console=Console(stderr=True))


def _rebuild(args: argparse.Namespace, *, swap: bool) -> int:
    from ..hq.store import open_hq_store
    from ..hq.web import store_daily

    store = open_hq_store(args.db)
    bar = _bar()
    try:
        if bar is None:
            report = store.rebuild_crm(swap=swap)
        else:
            with bar:
                task = bar.add_task("rebuild" if swap else "verify", total=None)
                report = store.rebuild_crm(swap=swap, progress=lambda done, total: bar.update(
                    task, completed=done, total=total))
        # the dashboard's daily totals are kept from the lines: recomputed, or compared with them
        daily = store_daily.rebuild(store) if swap else store_daily.check(store)
    finally:
        store.close()
    data = report.to_dict()
    if swap:
        data["daily_totals"] = daily
        _emit(args, data, f"read model rebuilt: {report.members} members, {report.lines} sale lines, "
                          f"{daily} daily totals")
        return 0
    assert isinstance(daily, list)
    data["daily_total_diffs"] = daily[:20]
    ok = report.ok and not daily
    data["ok"] = ok
    human = ("read model matches a rebuild" if ok else
             f"read model differs from a rebuild: {len(report.member_diffs)} member(s), "
             f"{len(report.line_diffs)} sale line(s), {len(report.day_diffs)} day rollup row(s), "
             f"{len(daily)} daily total(s) (first 20 of each with --json)")
    _emit(args, data, human)
    return 0 if ok else 1


def cmd_rebuild(args: argparse.Namespace) -> int:
    return _rebuild(args, swap=True)


def cmd_verify(args: argparse.Namespace) -> int:
    return _rebuild(args, swap=False)


def cmd_member_show(args: argparse.Namespace) -> int:
    given = [x for x in (args.member, args.phone, args.external) if x]
    if len(given) != 1:
        return _fail("member show: give exactly one of ID, --phone P, --external X")
    from ..hq.record import MemberNotFound, MemberRef, member_record

    hq = _hq(args)
    try:
        rec = member_record(hq.store, hq.program(), MemberRef(args.member, args.phone, args.external), hq.clock())
    except MemberNotFound as e:
        return _fail(str(e))
    finally:
        hq.store.close()
    f = rec["figures"]
    p = rec["profile"]
    consent = ", ".join(ch for ch, on in rec["consent"].items() if on) or "none"
    human = "\n".join([
        f"member {rec['member']}  {p['name'] or '-'}  {p['phone'] or '-'}  {p['email'] or '-'}"
        + ("  (erased)" if rec["erased"] else "") + (f"  merged into {rec['merged_into']}" if rec["merged_into"] else ""),
        f"store {p['store'] or '-'}  enrolled {p['enrolled_at'] or '-'}  external id {p['external_id'] or '-'}",
        f"consent: {consent}",
        f"balance {rec['balance']}  tier {rec['tier'] or '-'}  badges {', '.join(rec['badges']) or '-'}",
        (f"visits {f['visits']} (30d {f['visits_30d']}, 90d {f['visits_90d']}, 365d {f['visits_365d']})  "
        f"spend {f['spend']} (30d {f['spend_30d']}, 90d {f['spend_90d']}, 365d {f['spend_365d']})"),
        (f"first {f['first_visit'] or '-'}  last {f['last_visit'] or '-'}  usually at {f['usual_hour']}h "
        f"weekday {f['usual_weekday']}  favourite {f['fav_category'] or '-'} at {f['fav_store'] or '-'}"),
        *[f"  {s['local_date']} {s['store']:<8} {s['receipt']:<12} {s['total']:>10}"
          + ("  voided" if s["voided"] else "") for s in rec["sales"][:10]],
    ])
    _emit(args, rec, human)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..hq.importer import (
        FIELDS,
        PRODUCT_FIELDS,
        ImportOptions,
        ImportRefused,
        parse_map,
        run_import,
    )
    from ..hq.store import open_hq_store

    try:
        opts = ImportOptions(
            files=tuple(Path(f) for f in args.files), format=args.format,
            mapping=parse_map(args.map, FIELDS, "--map"), currency=args.currency,
            products=Path(args.products) if args.products else None,
            product_map=parse_map(args.product_map, PRODUCT_FIELDS, "--product-map"), tz=args.tz,
            naive_as_local=args.naive_as == "local", skip_bad=args.skip_bad, source=args.source, store=args.store)
    except ImportRefused as e:
        return _fail(str(e))
    import datetime as dt

    store = open_hq_store(args.db)
    bar = _bar()
    try:
        if bar is None:
            result = run_import(store, opts, now=dt.datetime.now(dt.UTC))
        else:
            with bar:
                task = bar.add_task("import", total=None)
                result = run_import(store, opts, now=dt.datetime.now(dt.UTC),
                                    progress=lambda _p, done, total: bar.update(task, completed=done, total=total))
    except ImportRefused as e:
        return _fail(str(e))
    finally:
        store.close()
    _emit(args, result.to_dict(), f"{result.rows} rows, {result.sales} sales ({result.new_sales} new), "
                                  f"{result.members} members ({result.new_members} new)"
                                  + (f", {result.skipped} bad rows skipped" if result.skipped else ""))
    return 0


def register(sub: Any) -> None:
    """Add `tillstamp hq ...` to the CLI."""
    common = _common()
    hq = sub.add_parser("hq", help="head office: sync endpoint, terminals, program").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = hq.add_parser("serve", parents=[common], help="run the HQ sync endpoint, dashboard and customer pages (HTTP)",
                      description="Serve the sync API (OpenAPI at /docs), the staff dashboard at / and the "
                                  "customer's pages at /k/ and /saya.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--log-level", default="info",
                   help="uvicorn log level (default info: its address and one line per request)")
    p.add_argument("--config", metavar="HQ_TOML",
                   help="hq.toml: channels and rules, the flow scheduler, provider webhooks, the public "
                        "address and the one-time-code channel (docs/FLOWS.md, docs/DASHBOARD.md)")
    p.add_argument("--tick", type=float, default=60.0, help="seconds between flow ticks (default 60)")
    p.add_argument("--behind-proxy", action="store_true",
                   help="trust X-Forwarded-For/-Proto from the reverse proxy (for rate limits by address)")
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
    p.add_argument("--store-name", help="the shop's name, printed on its tills' receipts")
    p.set_defaults(func=cmd_terminal_add)
    _register_terminal_more(term, common)

    prog = hq.add_parser("program", help="publish the loyalty program").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = prog.add_parser("set", parents=[common], help="publish a new program version from a TOML file",
                        description="Validate and publish a program; tills receive it on their next pull.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_program_set)
    p = prog.add_parser("show", parents=[common], help="show the program tills receive now",
                        description="Show the newest published program version.")
    p.set_defaults(func=cmd_program_show)

    p = hq.add_parser("stats", parents=[common], help="events, sales, quarantine and terminals",
                      description="Counts and per-terminal sync state.")
    p.set_defaults(func=cmd_stats)
    p = hq.add_parser("alerts", parents=[common], help="overdrafts and quarantines found at ingest",
                      description="List alerts raised by ingest.")
    p.set_defaults(func=cmd_alerts)
    p = hq.add_parser("erase", parents=[common], help="erase a member's personal data everywhere",
                      description="Scrub a member's PII at HQ and, through the feed, at every till.")
    p.add_argument("member", metavar="MEMBER", help="member id or phone number")
    p.set_defaults(func=cmd_erase)
    p = hq.add_parser("rebuild", parents=[common], help="recompute the CRM read model from the events",
                      description="Recompute crm_members and sale_lines from the events, in chunks, then swap "
                                  "them in (a progress bar on a terminal).")
    p.set_defaults(func=cmd_rebuild)
    p = hq.add_parser("verify", parents=[common], help="check the CRM read model against a rebuild",
                      description="Rebuild the read model aside and compare: {\"ok\": true} when equal, else the "
                                  "differences and exit status 1.")
    p.set_defaults(func=cmd_verify)
    member = hq.add_parser("member", help="the customer record").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=sub._parser_class)
    p = member.add_parser("show", parents=[common], help="everything about one member (the 360)",
                          description="Profile, consent, figures, balance, tier, card, badges, the last 50 sales "
                                      "with their lines, rewards and claims.")
    p.add_argument("member", nargs="?", metavar="ID", help="member id")
    p.add_argument("--phone", help="find the member by phone number")
    p.add_argument("--external", metavar="X", help="find the member by their id in an imported system")
    p.set_defaults(func=cmd_member_show)
    p = hq.add_parser("import", parents=[common], help="import a shop's past receipts (CSV, JSON lines, Parquet)",
                      description="One sale.recorded event per receipt (store, receipt) under the IMPORT terminal; "
                                  "importing the same file again adds nothing. A bad row refuses the whole import "
                                  "(exit 2) unless --skip-bad. Rules for odd rows: docs/HQ.md.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="file format (default: from the suffix)")
    p.add_argument("--map", metavar="KEY=COL,...",
                   help="columns for member, receipt, at, store, sku, qty, amount, name, category "
                        "(default: columns named like the keys)")
    p.add_argument("--currency", default="IDR", help="currency of the amounts, for its minor unit (default IDR)")
    p.add_argument("--products", metavar="FILE", help="a product catalogue to join on sku (name, category)")
    p.add_argument("--product-map", metavar="KEY=COL,...", help="catalogue columns for sku, name, category")
    p.add_argument("--tz", default="Asia/Jakarta", help="the stores' time zone (default Asia/Jakarta)")
    p.add_argument("--naive-as", choices=["utc", "local"], default="utc",
                   help="how to read a time without an offset: UTC (default) or in --tz")
    p.add_argument("--skip-bad", action="store_true", help="import the good rows and report the bad ones")
    p.add_argument("--source", help="name of the source system in the sales' ids (default: the first file's name)")
    p.add_argument("--store", help="store id for rows without a store column")
    p.set_defaults(func=cmd_import)
    p = hq.add_parser("revoke", parents=[common], help="revoke a member's cards issued until now",
                      description="Revoke every card of the member issued until now.")
    p.add_argument("member")
    p.set_defaults(func=cmd_revoke)

    from . import hq_crm, hq_flows, hq_tags

    hq_crm.register(hq, common, sub._parser_class)
    hq_flows.register(hq, common, sub._parser_class)
    hq_tags.register(hq, common, sub._parser_class)

def _register_terminal_more(term: Any, common: argparse.ArgumentParser) -> None:
    p = term.add_parser("list", parents=[common], help="list enrolled terminals",
                        description="Every enrolled terminal: store, acked sequence, last seen.")
    p.set_defaults(func=cmd_terminal_list)
    p = term.add_parser("remove", parents=[common], help="stop a terminal from syncing",
                        description="Forget a terminal's key: it can no longer push or pull. Its "
                                    "events stay at head office.")
    p.add_argument("terminal", metavar="TERMINAL")
    p.set_defaults(func=cmd_terminal_remove)
