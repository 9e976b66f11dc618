"""What every command group shares: the parser class, the common options, output.

Kept free of heavy imports: `tillstamp --help` builds the whole command tree from the
command groups, and each group imports its library code only inside the command it runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXAMPLE_PROGRAM = Path(__file__).resolve().parents[2] / "examples" / "program.toml"


class UsageError(Exception):
    """Bad input on the command line: exit 2 with one line."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def _common() -> Parser:
    p = Parser(add_help=False)
    p.add_argument("--data", default=argparse.SUPPRESS, metavar="DIR", help="data folder (default: $TILLSTAMP_HOME or ~/.tillstamp)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print machine-readable JSON")
    return p


COMMON = _common()


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str] | None = None) -> None:
    """Print a result: JSON with --json, else a readable rendering."""
    if getattr(args, "json", False) or human is None:
        print(json.dumps(data, ensure_ascii=False, default=str))
    else:
        print(human(data))
    sys.stdout.flush()


def kv(data: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in data.items() if v is not None)




def data_arg(args: argparse.Namespace) -> Path:
    """The data folder a command works on (--data, $TILLSTAMP_HOME or ~/.tillstamp)."""
    from ..agent.config import data_dir

    return data_dir(getattr(args, "data", None))
