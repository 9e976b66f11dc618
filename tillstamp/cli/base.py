"""What every command group shares: the parser class, the common options, output.

Kept free of heavy imports: `tillstamp --help` builds the whole command tree from the
command groups, and each group imports its library code only inside the command it runs.

The output rule, the same for every command (tests/core/test_cli_rules.py walks the tree):
every command accepts `--json` (and `--data`) before or after its name; results go to stdout,
errors to stderr. Without `--json` stdout is text for a person and no JSON; with `--json` it is
JSON only: one document, or one line per item for a command that streams (`sale record`,
`decode`, `scan listen`, `ledger show`, `tap run`), where an item that fails is a JSON line
`{"error", "message", ...}` too. Either way a failure also says one line on stderr.
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


def wants_json(args: argparse.Namespace) -> bool:
    """True when the command was given `--json` (before or after its name)."""
    return bool(getattr(args, "json", False))


# One encoder for the process: json.dumps with options builds a new one per call, which costs
# more than encoding a result line (`sale record` prints one per sale).
_JSON = json.JSONEncoder(ensure_ascii=False, default=str)


def _answer(text: str) -> None:
    # One write per answer, flushed: the reader (a POS waiting on each sale's result) sees the
    # line as soon as it is whole. print() writes the text and the newline apart, and with an
    # unbuffered stdout (PYTHONUNBUFFERED) each is a system call the reader wakes for.
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], str]) -> None:
    """Print a result: JSON with --json, else a readable rendering."""
    _answer(_JSON.encode(data) if wants_json(args) else human(data))


def item_failed(args: argparse.Namespace, message: str, **data: Any) -> None:
    """One item of a stream failed: a JSON line on stdout with --json, and a line on stderr."""
    if wants_json(args):
        _answer(_JSON.encode({**data, "message": message}))
    print(f"tillstamp: {message}", file=sys.stderr, flush=True)


def kv(data: dict[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in data.items() if v is not None)


def emit_text(args: argparse.Namespace, data: Any, human: str) -> None:
    """Print a result: JSON with --json, else the text already written for a person."""
    emit(args, data, lambda _: human)


def fail(message: str) -> int:
    """Say why on one line of stderr; the exit status of bad input or a refusal (2)."""
    print(f"tillstamp: {message}", file=sys.stderr, flush=True)
    return 2


def data_arg(args: argparse.Namespace) -> Path:
    """The data folder a command works on (--data, $TILLSTAMP_HOME or ~/.tillstamp)."""
    from ..agent.config import data_dir

    return data_dir(getattr(args, "data", None))
