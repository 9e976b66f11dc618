"""Agent commands for the `tillstamp` CLI: `agent run`, `print reprint` and `demo`."""

from __future__ import annotations

import argparse
import gc
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Any

from ..agent.config import ConfigError, TillConfig, data_dir, load_config
from .base import COMMON, Parser, UsageError, emit

log = logging.getLogger("tillstamp.agent")


def configure_logging(data: Path, level: int = logging.INFO) -> None:
    """Log to the console and to a rotating file in the data folder (logs/agent.log)."""
    import escpos.capabilities  # noqa: F401 - it calls logging.basicConfig on import: get that over with

    folder = data / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    root = logging.getLogger()
    for handler in list(root.handlers):  # ours from an earlier call, or basicConfig's
        if getattr(handler, "_tillstamp", False) or type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
            handler.close()
    console = logging.StreamHandler(sys.stderr)
    rotating = logging.handlers.RotatingFileHandler(folder / "agent.log", maxBytes=2_000_000,
                                                    backupCount=5, encoding="utf-8")
    for handler in (console, rotating):
        handler.setFormatter(fmt)
        handler._tillstamp = True  # type: ignore[union-attr]  # marks our handlers for removal
        root.addHandler(handler)
    root.setLevel(level)


def _data_and_config(args: argparse.Namespace) -> tuple[Path, Path | None]:
    config = Path(args.config) if getattr(args, "config", None) else None
    explicit = getattr(args, "data", None)
    # `--config FILE` alone means the data folder is the one that holds it.
    data = Path(explicit) if explicit else (config.parent if config else data_dir(None))
    return data, config


def cmd_agent_run(args: argparse.Namespace) -> int:
    """`tillstamp agent run`: serve the POS API and panel until SIGTERM/SIGINT."""
    from ..agent.runtime import AgentOptions, setup
    from ..pos_plugin.server import check_bind, parse_listen, serve

    data, config = _data_and_config(args)
    cfg = load_config(data, config)
    listen = args.listen or cfg.listen
    host, _ = parse_listen(listen)
    check_bind(host, cfg.api_key)  # before any device starts or anything listens
    check_tap(cfg)
    configure_logging(data, logging.DEBUG if args.verbose else logging.INFO)
    rt = setup(AgentOptions(data=data, config=config, listen=listen))
    try:

        def ready(port: int) -> None:
            url = f"http://{host}:{port}/"
            log.info("POS API and cashier panel on %s", url)
            emit(args, {"listening": url, "data": str(data)}, lambda d: f"tillstamp agent on {d['listening']}")
            # What start-up built (modules, the program, the app) lives as long as the agent.
            # Frozen, it is out of the collector's reach, so a full collection in the middle of
            # a sale walks only the requests' objects, as `sale record` and `hq serve` do
            # (docs/AGENT.md, "The sale loop").
            gc.collect()
            gc.freeze()

        serve(rt, listen, on_ready=ready)
    finally:
        gc.unfreeze()  # a program that called main() in its own process gets its collector back
        rt.shutdown()
    return 0


def check_tap(cfg: TillConfig) -> None:
    """Refuse a wrong `[tap]` section before anything starts (ConfigError: exit 2)."""
    section = cfg.extra.get("tap") or {}
    if not section.get("listen"):
        return
    from tillstamp.tap import TapConfigError, tap_config

    try:
        tap_config(section, cfg.data, default_printer=cfg.printer, language=cfg.language)
    except TapConfigError as e:
        raise ConfigError(f"tillstamp.toml: {e}") from None


def cmd_print_reprint(args: argparse.Namespace) -> int:
    """`tillstamp print reprint RECEIPT`: print a recorded sale's loyalty receipt again."""
    from tillstamp.drivers.errors import DeviceConfigError, DeviceError
    from tillstamp.drivers.printer import open_printer
    from tillstamp.drivers.receipt import render_receipt

    from ..agent.receipts import build_receipt
    from ..agent.runtime import printer_width
    from ..agent.till import open_till

    with open_till(data_dir(getattr(args, "data", None))) as till:
        cfg = till.config
        url = args.printer or cfg.printer
        if not url:
            raise UsageError("print reprint: no printer in tillstamp.toml; give --printer URL")
        row = till.service.find_sale(args.receipt, args.day)
        receipt = build_receipt(till.service, row.key, store_name=cfg.store_name or cfg.store,
                                language=cfg.language, copy=True)  # type: ignore[arg-type]
        data = render_receipt(receipt, width=printer_width(cfg.extra))
    try:
        with open_printer(url) as printer:
            printer.write(data)
    except DeviceConfigError as e:
        raise UsageError(f"print reprint: {e}") from None
    except DeviceError as e:
        print(f"tillstamp: printer not ready: {e}", file=sys.stderr)
        return 1
    emit(args, {"receipt": row.receipt, "printer": url, "bytes": len(data)},
         lambda d: f"reprinted {d['receipt']} on {d['printer']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """`tillstamp demo`: a scripted morning at a Jakarta coffee shop, no hardware needed."""
    from ..demo.morning import run_demo

    return run_demo(out=Path(args.out) if args.out else None, serve=args.serve,
                    as_json=getattr(args, "json", False))


def _print_group(subparsers: Any) -> Any:
    """The `print` subcommands from cli_devices (or a new group when that module is absent)."""
    existing = subparsers.choices.get("print")
    if existing is None:
        return subparsers.add_parser("print", help="receipt printer tools").add_subparsers(
            dest="print_command", required=True, metavar="COMMAND")
    for action in existing._actions:  # argparse keeps a group's subcommands in a private action
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the print command has no subcommands")


def register(subparsers: Any) -> None:
    """Add `agent run`, `print reprint` and `demo` to the CLI."""
    agent = subparsers.add_parser("agent", help="run the till agent (POS API, cashier panel, devices)")
    sub = agent.add_subparsers(dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = sub.add_parser("run", parents=[COMMON], help="serve the POS API and panel, read scanners, print receipts",
                       description="Run the till agent until SIGTERM/SIGINT: the POS API and cashier panel, "
                                   "camera and scanner readers, the print queue and (with [hq] url) sync.")
    p.add_argument("--config", metavar="FILE", help="tillstamp.toml (default: in the data folder)")
    p.add_argument("--listen", metavar="HOST:PORT", help="override [api] listen (default 127.0.0.1:8765)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_agent_run)

    p = _print_group(subparsers).add_parser(
        "reprint", parents=[COMMON], help="print a recorded sale's loyalty receipt again",
        description="Print the loyalty receipt of a recorded sale again (same claim QR for a sale "
                    "without a member).")
    p.add_argument("receipt", metavar="RECEIPT")
    p.add_argument("--printer", metavar="URL", help="printer URL (default: [devices] printer)")
    p.add_argument("--day", help="business day YYYY-MM-DD, when receipt numbers restart daily")
    p.set_defaults(func=cmd_print_reprint)

    p = subparsers.add_parser("demo", parents=[COMMON], help="a scripted morning at a coffee shop, no hardware",
                              description="Set up a temporary till with a simulated camera, scanner and "
                                          "printer, run a scripted morning through the POS API, report, "
                                          "and write receipt PNGs.")
    p.add_argument("--out", metavar="DIR", help="folder for receipts and the report (default: a temp folder)")
    p.add_argument("--serve", action="store_true", help="keep the agent running afterwards; prints the panel URL")
    p.set_defaults(func=cmd_demo)
