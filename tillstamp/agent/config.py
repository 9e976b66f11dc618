"""The till's configuration: `tillstamp.toml` in the data folder, written by `tillstamp init`."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_NAME = "tillstamp.toml"
DB_NAME = "till.db"
DEFAULT_LISTEN = "127.0.0.1:8765"


class ConfigError(ValueError):
    """The configuration is missing or wrong and needs a person to fix it."""


@dataclass(frozen=True)
class TillConfig:
    """Everything `agent run` and the CLI need to know about this till."""

    data: Path
    store: str
    terminal: str
    program: Path
    store_name: str = ""
    language: str = "id"
    daily_receipts: bool = False
    camera: str = ""
    scanner: str = ""
    printer: str = ""
    listen: str = DEFAULT_LISTEN
    api_key: str = ""
    hq_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def db_path(self) -> Path:
        """The till's SQLite database."""
        return self.data / DB_NAME

    @property
    def keys_dir(self) -> Path:
        """Where the keys live."""
        return self.data / "keys"


def data_dir(explicit: str | None) -> Path:
    """The data folder: --data, else $TILLSTAMP_HOME, else ~/.tillstamp."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TILLSTAMP_HOME")
    return Path(env) if env else Path.home() / ".tillstamp"


def load_config(data: Path, path: Path | None = None) -> TillConfig:
    """Read tillstamp.toml from the data folder (or `path`)."""
    path = path or data / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"{path}: not found; run `tillstamp init --store ID --terminal ID` first")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    till = raw.get("till", {})
    devices = raw.get("devices", {})
    api = raw.get("api", {})
    hq = raw.get("hq", {})
    for key in ("store", "terminal", "program"):
        if not isinstance(till.get(key), str) or not till[key]:
            raise ConfigError(f"{path}: [till] {key} is missing")
    language = till.get("language", "id")
    if language not in ("id", "en"):
        raise ConfigError(f"{path}: [till] language must be 'id' or 'en'")
    program = Path(till["program"])
    return TillConfig(
        data=data,
        store=till["store"],
        terminal=till["terminal"],
        program=program if program.is_absolute() else path.parent / program,
        store_name=till.get("store_name", ""),
        language=language,
        daily_receipts=bool(till.get("daily_receipts", False)),
        camera=devices.get("camera", ""),
        scanner=devices.get("scanner", ""),
        printer=devices.get("printer", ""),
        listen=api.get("listen", DEFAULT_LISTEN),
        api_key=api.get("api_key", ""),
        hq_url=hq.get("url", ""),
        extra=raw,
    )


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(cfg: TillConfig) -> str:
    """A commented tillstamp.toml for `cfg`."""
    return f"""# tillstamp.toml: this till's configuration, written by `tillstamp init`.
# `tillstamp agent run` and every other command read it from the data folder.

[till]
store = {_q(cfg.store)}            # this store's id at head office
terminal = {_q(cfg.terminal)}         # this till's id; each till of a store has its own
store_name = {_q(cfg.store_name)}   # printed at the top of loyalty receipts
program = {_q(str(cfg.program))}      # the loyalty program (TOML), relative to this folder
language = {_q(cfg.language)}                # receipts and cashier panel: "id" (Indonesian) or "en"
daily_receipts = {str(cfg.daily_receipts).lower()}        # true when the POS restarts receipt numbers every day

[devices]
# Each device opens from a URL; leave empty for none.
camera = {_q(cfg.camera)}       # camera://0, video:///path/clip.mp4, images:///path/dir
scanner = {_q(cfg.scanner)}      # serial:///dev/ttyUSB0?baudrate=9600, socket://HOST:PORT, stdin://
printer = {_q(cfg.printer)}      # escpos+tcp://HOST:9100, escpos+usb://VID:PID, file:///path/out.bin, dummy://

[api]
listen = {_q(cfg.listen)}    # the POS API and cashier panel; any address but loopback needs api_key
api_key = {_q(cfg.api_key)}

[hq]
url = {_q(cfg.hq_url)}          # head office sync endpoint; empty: this till runs alone

{_tap_section(cfg.extra.get("tap") or {})}"""


# The [tap] keys `tillstamp init` writes, with their defaults and what they mean (docs/TAP.md).
_TAP_KEYS: tuple[tuple[str, object, str], ...] = (
    ("allow", ["192.168.1.20"], "POS addresses that may print; required to listen beyond loopback"),
    ("printer", "escpos+tcp://192.168.1.50:9100", "the real printer; default: [devices] printer"),
    ("template", "auto", "a shipped name, a .toml path (relative to this folder), or auto"),
    ("member_window_s", 120, "a member scanned this recently gets the printed receipt's stamps"),
    ("width", 48, "32 (58 mm) or 48 (80 mm) columns"),
    ("offline", "spool", "printer away: spool prints it later; keep only keeps the job"),
)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return _q(str(value))


LISTEN_HELP = ("tcp://127.0.0.1:9100 (a POS on this machine), tcp://0.0.0.0:9100 with allow, "
               "or serial:///dev/ttyS1")


def _tap_section(tap: dict[str, Any]) -> str:
    """The [tap] table: the values set in `tap`, the other keys as commented defaults."""
    lines = [
        "[tap]",
        "# The print tap (docs/TAP.md): the POS prints to the agent, which records each receipt's sale",
        "# and prints the loyalty block into it before forwarding it to the printer. Empty listen: off.",
        f"listen = {_q(str(tap.get('listen', '')))}    # {LISTEN_HELP}",
    ]
    for key, default, why in _TAP_KEYS:
        if key in tap:
            lines.append(f"{key} = {_toml_value(tap[key])}    # {why}")
        else:
            lines.append(f"# {key} = {_toml_value(default)}    # {why}")
    known = {"listen", *(k for k, _, _ in _TAP_KEYS)}
    lines += [f"{key} = {_toml_value(value)}" for key, value in tap.items() if key not in known]
    return "\n".join(lines) + "\n"
