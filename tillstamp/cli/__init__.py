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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
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
        raise


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


__all__ = ["build_parser", "main", "run"]
