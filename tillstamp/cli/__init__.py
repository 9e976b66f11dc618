"""The `tillstamp` command line: thin command groups over the library.

Each group is one module with `register(subparsers)`; building the parser imports only
argparse and the groups themselves, and a command imports its library code when it runs,
so `tillstamp --help` starts quickly.

Exit status: 0 done, 2 bad input or refused (one line on stderr, nothing written),
1 an unexpected failure.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from .base import COMMON, Parser, UsageError

GROUPS = ("till", "devices", "agent", "tap", "sync", "hq")


def build_parser() -> Parser:
    """The whole command tree."""
    parser = Parser(prog="tillstamp", description="Offline-first loyalty at the till: stamps, members, receipts, sync.",
                    parents=[COMMON])
    parser.add_argument("--version", action="version", version="tillstamp 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in GROUPS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or a refusal: one line on stderr and exit 2."""
    from ..agent.config import ConfigError
    from ..agent.service import Refused
    from ..loyalty.program import ProgramError
    from ..loyalty.sale import SaleError

    return (UsageError, Refused, SaleError, ConfigError, ProgramError)


def _undecodable_argument(argv: Sequence[str]) -> str | None:
    # Python hands bytes that are not UTF-8 in argv over as lone surrogates (surrogateescape);
    # they would fail much later, deep in a write, as a traceback.
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    bad = _undecodable_argument(argv)
    if bad is not None:
        print(f"tillstamp: argument {bad!r} is not valid UTF-8 text", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"tillstamp: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except Exception as e:
        if isinstance(e, _user_errors()):
            print(f"tillstamp: {e}", file=sys.stderr)
            return 2
        from ..agent.config import data_dir
        from ..agent.failures import classify

        failure = classify(e, data_dir(getattr(args, "data", None)))
        if failure is None:
            raise
        # A full disk, a read-only or damaged database, undecodable input: one line, and
        # nothing was written (a failed write rolls its transaction back).
        print(f"tillstamp: {failure.message}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["build_parser", "main", "run"]
