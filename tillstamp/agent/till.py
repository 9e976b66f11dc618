"""Opening a till from its data folder: config, store, program, keys and service together."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..loyalty.program import Program, load_program
from .config import CONFIG_NAME, ConfigError, TillConfig, load_config, render_config
from .keys import Keys
from .service import Service
from .store import Store, open_store

if TYPE_CHECKING:
    from .sync_store import SyncStore


@dataclass
class Till:
    """One till's parts, opened together and closed together."""

    config: TillConfig
    store: Store
    program: Program
    keys: Keys
    service: Service
    sync: SyncStore | None = None  # set when the till is enrolled with head office

    def close(self) -> None:
        """Close the database."""
        self.store.close()

    def member_json(self, member_id: str) -> dict[str, Any]:
        """A member as `member show` prints it."""
        row = self.store.member(member_id)
        view = self.service.view(member_id)
        return {
            "member": member_id,
            "name": row.name if row else None,
            "phone": row.phone if row else None,
            "balance": view.balance,
            "tier": view.tier.id,
            "tier_name": view.tier.name,
            "next_tier": view.next_tier.id if view.next_tier else None,
            "to_next_tier": view.to_next_tier,
            "card": f"{view.card_filled}/{view.card_size}",
            "full_cards": view.full_cards,
            "expiring": [{"stamps": x.stamps, "at": x.at.isoformat()} for x in view.expiring],
            "missions": [{"id": m.id, "name": m.name, "progress": m.progress, "target": m.target, "done": m.done}
                         for m in view.missions],
            "badges": list(view.badges),
            "visits": view.visits,
            "consent": self.store.consent(member_id),
        }

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_till(data: Path, *, clock: Callable[[], dt.datetime] | None = None, config: Path | None = None) -> Till:
    """Open the till whose data folder is `data`."""
    cfg = load_config(data, config)
    program = load_program(cfg.program)
    keys = Keys.load(cfg.keys_dir, cfg.terminal)
    store = open_store(cfg.db_path)
    stored = (store.get_meta("store"), store.get_meta("terminal"))
    if stored != (cfg.store, cfg.terminal):
        store.close()
        raise ConfigError(
            f"{cfg.db_path}: belongs to store {stored[0]} terminal {stored[1]}, "
            f"but {CONFIG_NAME} says {cfg.store} {cfg.terminal}"
        )
    kwargs = {"clock": clock} if clock else {}
    service = Service(
        store, program, keys, store_id=cfg.store, terminal_id=cfg.terminal,
        daily_receipts=cfg.daily_receipts, **kwargs,
    )
    sync = None
    if cfg.hq_url:
        # Imported only for an enrolled till: the sync client pulls in requests and tenacity.
        from .sync_store import attach_sync

        sync = attach_sync(store, service, keys, cfg.hq_url)
    return Till(cfg, store, service.program, keys, service, sync)


def init_till(
    data: Path,
    *,
    store: str,
    terminal: str,
    program: Path,
    store_name: str = "",
    printer: str = "",
    standalone: bool = True,
) -> TillConfig:
    """Create a data folder: config, database, terminal keys and the program."""
    if (data / CONFIG_NAME).exists():
        raise ConfigError(f"{data}: already initialised (remove {CONFIG_NAME} to start again)")
    for what, val in (("store", store), ("terminal", terminal)):
        if not val or len(val) > 32 or not all(c.isalnum() or c in "-_" for c in val):
            raise ConfigError(f"--{what}: use 1-32 letters, digits, '-' or '_'")
    load_program(program)  # refuse a bad program before creating anything
    data.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(program, data / "program.toml")
    cfg = TillConfig(
        data=data, store=store, terminal=terminal, program=Path("program.toml"),
        store_name=store_name or store, printer=printer or f"file://{(data / 'receipts.bin').resolve()}",
    )
    keys = Keys.generate(terminal, standalone=standalone)
    keys.save(cfg.keys_dir)
    db = open_store(cfg.db_path)
    with db.write():
        db.set_meta("store", store)
        db.set_meta("terminal", terminal)
    db.close()
    tmp = data / (CONFIG_NAME + ".tmp")
    tmp.write_text(render_config(cfg), encoding="utf-8")
    tmp.replace(data / CONFIG_NAME)
    return cfg
