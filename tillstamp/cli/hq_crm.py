"""`tillstamp hq segment ...` and `tillstamp hq user ...`: segments and staff at head office.
Library code is imported inside each command, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import emit_text as _emit
from .base import fail as _fail

if TYPE_CHECKING:
    from ..hq.crm import Crm


def _crm(args: argparse.Namespace) -> Crm:
    from ..hq.crm import Crm
    from ..hq.service import Hq
    from ..hq.store import open_hq_store

    return Crm(Hq(open_hq_store(args.db)))


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _read(source: str) -> dict[str, Any]:
    """A definition from a file or stdin (`-`); SegmentError if it cannot be read."""
    from ..hq.segments import SegmentError, load_segment_text

    if source == "-":
        return load_segment_text(sys.stdin.read(), "stdin")
    path = Path(source)
    if not path.is_file():
        raise SegmentError(f"{path}: no such segment file")
    return load_segment_text(path.read_text(encoding="utf-8"), str(path))


def _run(args: argparse.Namespace, body: Any) -> int:
    """Run `body(crm)` with the CLI's error rules: a refusal is one line on stderr and exit 2."""
    from ..hq.crm import CrmConflict, Forbidden, NotFound
    from ..hq.segments import SegmentError
    from ..hq.staff import StaffError

    try:
        crm = _crm(args)
    except ValueError as e:
        return _fail(str(e))
    try:
        return int(body(crm))
    except (SegmentError, StaffError, CrmConflict, NotFound, Forbidden) as e:
        return _fail(str(e))
    finally:
        crm.store.close()


def cmd_preview(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        from ..hq.segments import NAME_RE

        if args.file != "-" and not Path(args.file).exists() and NAME_RE.match(args.file):
            p = crm.preview_named(args.file, args.as_of, sample=args.sample)  # a saved or predefined segment
        else:
            p = crm.preview(_read(args.file), args.as_of, sample=args.sample)
        _emit(args, p.to_json(), f"{p.count} members as of {p.as_of}" +
              "".join(f"\n  {m['member']}  {m['name'] or '-'}  {m['phone'] or '-'}" for m in p.sample))
        return 0
    return _run(args, body)


def cmd_save(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        saved = crm.save(_read(args.file), name=args.name)
        shown = crm.show(saved.name)
        _emit(args, shown, f"segment {saved.name} saved ({shown['sizes'][-1]['size']} members today)")
        return 0
    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        segs = crm.segments()
        _emit(args, segs, "\n".join(f"{s['name']:<24} {'predefined' if s['predefined'] else 'saved':<10} "
                                    f"{json.dumps(s['definition'], ensure_ascii=False)}" for s in segs))
        return 0
    return _run(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        s = crm.show(args.name)
        human = (f"{s['name']}: {json.dumps(s['definition'], ensure_ascii=False)}\n" +
                 "\n".join(f"  {x['day']}  {x['size']}" for x in s["sizes"]))
        _emit(args, s, human)
        return 0
    return _run(args, body)


def cmd_export(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        exp = crm.export(args.name, args.as_of)
        out = open(args.out, "w", newline="", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        try:
            if args.csv:
                w = csv.writer(out)
                w.writerow(exp.columns)
                w.writerows(exp.rows)
            else:
                for r in exp.rows:
                    out.write(json.dumps(dict(zip(exp.columns, r, strict=True)), ensure_ascii=False) + "\n")
        finally:
            if args.out:
                out.close()
        if args.out:
            print(f"{len(exp.rows)} members of {exp.name} as of {exp.as_of} written to {args.out}", file=sys.stderr)
        return 0
    return _run(args, body)


def cmd_sizes(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        got = crm.record_sizes(args.as_of)
        _emit(args, got, "\n".join(f"{k:<24} {v}" for k, v in got.items()))
        return 0
    return _run(args, body)


def cmd_delete(args: argparse.Namespace) -> int:
    def body(crm: Crm) -> int:
        crm.delete(args.name)
        _emit(args, {"deleted": args.name}, f"segment {args.name} deleted")
        return 0
    return _run(args, body)


def _password(args: argparse.Namespace) -> str | None:
    """The password read from stdin (first line) with --password-stdin; PasswordError if too short."""
    if not getattr(args, "password_stdin", False):
        return None
    from ..hq.web.auth import hash_password

    return hash_password(sys.stdin.readline().rstrip("\r\n"))


def cmd_user_add(args: argparse.Namespace) -> int:
    from ..hq.web.auth import PasswordError

    try:
        hashed = _password(args)
    except PasswordError as e:
        return _fail(str(e))

    def body(crm: Crm) -> int:
        row, token = crm.add_user(args.name, args.role)
        if hashed is not None:
            from ..hq.web import store_web

            store_web.set_password(crm.store, row.name, hashed, crm.hq.clock())
        _emit(args, {"user": row.name, "role": row.role, "store": row.store, "token": token},
              f"user {row.name} ({row.role}{':' + row.store if row.store else ''}) added; bearer token "
              f"(shown once): {token}")
        return 0
    return _run(args, body)


def cmd_user_password(args: argparse.Namespace) -> int:
    from ..hq.web.auth import PasswordError

    try:
        hashed = _password(args)
    except PasswordError as e:
        return _fail(str(e))
    assert hashed is not None

    def body(crm: Crm) -> int:
        from ..hq.crm import NotFound
        from ..hq.web import store_web

        if store_web.staff_user(crm.store, args.name) is None:
            raise NotFound(f"user {args.name!r} not found (add one with `hq user add`)")
        store_web.set_password(crm.store, args.name, hashed, crm.hq.clock())
        _emit(args, {"user": args.name, "password": "set"}, f"password of {args.name} set")
        return 0
    return _run(args, body)


def register(hq: Any, common: argparse.ArgumentParser, parser_class: Any) -> None:
    """Add `hq segment ...` and `hq user ...` under `tillstamp hq`."""
    seg = hq.add_parser("segment", help="segments of members: preview, save, export, sizes").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    as_of = argparse.ArgumentParser(add_help=False)
    as_of.add_argument("--as-of", type=_date, metavar="DATE",
                       help="evaluate as of DATE 00:00 store time (default: today); nothing on or after it counts")

    p = seg.add_parser("preview", parents=[common, as_of], help="count a definition's members, with a sample",
                       description="Validate a definition (TOML or JSON file, or - for stdin) and count its members; "
                                   "or count a saved or predefined segment by NAME (and keep the day's size).")
    p.add_argument("file", metavar="FILE|-|NAME")
    p.add_argument("--sample", type=int, default=20, help="members to show (default 20)")
    p.set_defaults(func=cmd_preview)

    p = seg.add_parser("save", parents=[common], help="save a definition under its name",
                       description="Validate and save a segment (replacing one of the same name); keeps today's size.")
    p.add_argument("file", metavar="FILE|-")
    p.add_argument("--name", help="the segment's name (default: the file's `name`)")
    p.set_defaults(func=cmd_save)

    p = seg.add_parser("list", parents=[common], help="saved and predefined segments",
                       description="List saved segments, then the predefined ones.")
    p.set_defaults(func=cmd_list)

    p = seg.add_parser("show", parents=[common], help="a segment's definition and its sizes over time",
                       description="Show a segment's definition and the size kept for each day.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_show)

    p = seg.add_parser("export", parents=[common, as_of], help="every member of a segment (CSV or JSON lines)",
                       description="Export a segment's members; the export is written to the audit log.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--csv", action="store_true", help="CSV with a header (default: JSON lines)")
    p.add_argument("--out", metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=cmd_export)

    p = seg.add_parser("sizes", parents=[common, as_of], help="measure and keep every segment's size for the day",
                       description="Measure every saved and predefined segment and keep the day's size "
                                   "(run daily, e.g. from cron, for a chart of sizes over time).")
    p.set_defaults(func=cmd_sizes)

    p = seg.add_parser("delete", parents=[common], help="forget a saved segment",
                       description="Delete a saved segment; its kept sizes stay.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_delete)

    user = hq.add_parser("user", help="staff users of the CRM API").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    p = user.add_parser("add", parents=[common], help="add a staff user and print their bearer token",
                        description="Add a staff user; the bearer token is printed once and stored hashed.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--role", required=True, help="owner, marketer or manager:STORE")
    p.add_argument("--password-stdin", action="store_true",
                   help="read a password for the dashboard (at least 10 characters) from stdin; stored argon2-hashed")
    p.set_defaults(func=cmd_user_add)

    p = user.add_parser("password", parents=[common], help="set a staff user's dashboard password (from stdin)",
                        description="Read a new dashboard password from stdin and store its argon2 hash.")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_user_password, password_stdin=True)
