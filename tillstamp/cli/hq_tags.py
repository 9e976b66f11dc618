"""`tillstamp hq tags refresh` and `hq tags show`: the segment tags and hints tills receive.
Library code is imported inside each command, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from .base import UsageError, emit


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def cmd_refresh(args: argparse.Namespace) -> int:
    """Recompute every member's tags and hints; changed members reach the tills on their next pull."""
    from ..hq.service import Hq
    from ..hq.store import open_hq_store
    from ..hq.tags import refresh_tags

    hq = Hq(open_hq_store(args.db))
    try:
        tty = sys.stderr.isatty() and not getattr(args, "json", False)

        def progress(done: int, changed: int) -> None:
            print(f"\r{done} anggota / members, {changed} berubah / changed", end="", file=sys.stderr, flush=True)

        out = refresh_tags(hq, args.as_of, progress=progress if tty else None)
        if tty:
            print(file=sys.stderr)
    finally:
        hq.store.close()
    if out.skipped:
        print(f"tillstamp: hq tags refresh: left out saved segments that are not valid any more: "
              f"{', '.join(out.skipped)} (see `hq segment show`)", file=sys.stderr)
    emit(args, out.to_json(), lambda d: (f"tags as of {d['as_of']} (run {d['run']}): {d['members']} members, "
                                         f"{d['changed']} changed, {len(d['segments'])} segments"))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """A member's tags and hints as the tills receive them."""
    from ..hq import store_tags
    from ..hq.store import open_hq_store

    store = open_hq_store(args.db)
    try:
        row = store_tags.member_tags(store, args.member)
        run = store_tags.latest_run(store)
    finally:
        store.close()
    if row is None:
        raise UsageError(f"hq tags show: no tags for member {args.member} (run `hq tags refresh`)")
    data = {"member": args.member, **row, "refreshed": run["as_of"] if run else None}
    emit(args, data, lambda d: f"{d['member']}: {', '.join(d['tags']) or '-'}; hints {d['hints']} (as of {d['as_of']})")
    return 0


def register(hq: Any, common: argparse.ArgumentParser, parser_class: Any) -> None:
    """Add `hq tags refresh` and `hq tags show` under `tillstamp hq`."""
    tags = hq.add_parser("tags", help="segment tags and hints for the tills (offers offline)").add_subparsers(
        dest="action", metavar="ACTION", required=True, parser_class=parser_class)
    p = tags.add_parser("refresh", parents=[common], help="recompute every member's tags and hints",
                        description="Evaluate every saved and predefined segment and the hints as of DATE 00:00 "
                                    "store time (default today); members whose tags or hints changed get a new "
                                    "feed entry, so tills have them after their next pull. Run daily (cron); "
                                    "`hq predict` runs it too.")
    p.add_argument("--as-of", type=_date, metavar="DATE", help="YYYY-MM-DD (default: today, store time)")
    p.set_defaults(func=cmd_refresh)
    p = tags.add_parser("show", parents=[common], help="a member's tags and hints as tills receive them",
                        description="Print the member's stored tags, hints and their as-of.")
    p.add_argument("member", metavar="MEMBER")
    p.set_defaults(func=cmd_show)
