"""Enrolling a till with head office.

Two ways to join HQ (see docs/SYNC.md, "Enrolment"):
- a new till: `tillstamp init --hq URL --code CODE` creates the data folder with the ids HQ
  gives (the code was issued for a store, optionally for a terminal id);
- a till that ran alone: `tillstamp sync enroll --hq URL --code CODE` keeps its store and
  terminal ids (the code must be for that store; HQ refuses a terminal id already taken),
  hands the member-card role to HQ, and its whole ledger then syncs up from seq 1.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..loyalty import tokens
from ..sync.client import RequestsTransport, Transport, enroll, errors
from .config import CONFIG_NAME, ConfigError, load_config, render_config
from .keys import Keys
from .sync_store import SyncStore
from .till import init_till, open_till

EXAMPLE_PROGRAM = Path(__file__).resolve().parents[2] / "examples" / "program.toml"


def _set_hq_url(data: Path, hq: str) -> None:
    cfg = load_config(data)
    tmp = data / (CONFIG_NAME + ".tmp")
    tmp.write_text(render_config(dataclasses.replace(cfg, hq_url=hq, program=Path(cfg.extra["till"]["program"]))),
                   encoding="utf-8")
    tmp.replace(data / CONFIG_NAME)


def _refused(e: errors.SyncError) -> ConfigError:
    return ConfigError(f"head office refused: {e}")


def _enroll(t: Transport, hq: str, key: Any, code: str, **kw: Any) -> Any:
    """`enroll`, with every way it can fail as one ConfigError (exit 2, nothing created)."""
    from pydantic import ValidationError

    try:
        return enroll(t, key, code, **kw)
    except errors.Rejected as e:
        raise _refused(e) from None
    except errors.SyncError as e:  # offline, timed out, throttled: nothing was enrolled
        raise ConfigError(f"head office at {hq} cannot be reached ({e}); nothing was created, "
                          "try again when the network is back") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "request"
        raise ConfigError(f"enrolment: {where}: {first.get('msg', 'invalid')}") from None


def init_with_hq(data: Path, *, hq: str, code: str, store_name: str = "", program: Path | None = None,
                 transport: Transport | None = None) -> dict[str, Any]:
    """Create a new till's data folder with the ids head office assigns for `code`."""
    if (data / CONFIG_NAME).exists():
        raise ConfigError(f"{data}: already initialised; use `tillstamp sync enroll` for an existing till")
    key = tokens.new_private_key()
    t = transport or RequestsTransport(hq)
    resp = _enroll(t, hq, key, code)
    # The name given here wins; else the one head office has for the store; else the id.
    cfg = init_till(data, store=resp.store, terminal=resp.terminal, program=program or EXAMPLE_PROGRAM,
                    store_name=store_name or resp.store_name or "", standalone=False)
    if resp.program is not None:
        (data / "program.hq.json").write_text(json.dumps(resp.program, indent=2, ensure_ascii=False))
    keys = Keys(resp.terminal, key, None,
                {k: tokens.public_from_bytes(bytes.fromhex(v)) for k, v in resp.member_keys.items()})
    keys.save(cfg.keys_dir)
    _set_hq_url(data, hq)
    _record_enrolment(data, hq, resp.member_keys, resp.program, resp.program_version)
    return {"data": str(data), "store": resp.store, "store_name": cfg.store_name or None,
            "terminal": resp.terminal, "hq": hq, "program_version": resp.program_version}


def _record_enrolment(data: Path, hq: str, member_keys: dict[str, str], program: dict[str, Any] | None,
                      version: int) -> None:
    with open_till(data) as till:
        sync = till.sync or SyncStore(till.store, keys=till.keys)
        sync.trust_member_keys(member_keys)
        sync.set("hq_url", hq)
        if program is not None:
            sync.apply_page(_program_page(program, version, sync.pull_cursor()))


def _program_page(program: dict[str, Any], version: int, cursor: int) -> Any:
    from ..sync.client import p

    return p.PullResponse(cursor=cursor, next=cursor, more=True, changes=[
        p.Change(seq=0, kind="program", key="program", data={"version": version, "source": program})])


def enroll_existing(data: Path, *, hq: str, code: str, transport: Transport | None = None) -> dict[str, Any]:
    """Enrol a till that ran alone, keeping its ids, ledger and members."""
    cfg = load_config(data)
    if cfg.hq_url:
        raise ConfigError(f"{data}: already enrolled with {cfg.hq_url}")
    keys = Keys.load(cfg.keys_dir, cfg.terminal)
    t = transport or RequestsTransport(hq)
    resp = _enroll(t, hq, keys.terminal, code, terminal=cfg.terminal, store=cfg.store,
                   member_key=keys.member_signing)
    # HQ now signs member cards; the old key's public half stays trusted (here and at HQ)
    # so printed cards keep working, and its private half leaves the till.
    keys.member_signing = None
    for kid, pub in resp.member_keys.items():
        keys.member_keys.setdefault(kid, tokens.public_from_bytes(bytes.fromhex(pub)))
    keys.save(cfg.keys_dir)
    (cfg.keys_dir / "member-signing.pem").unlink(missing_ok=True)
    _set_hq_url(data, hq)
    _record_enrolment(data, hq, resp.member_keys, resp.program, resp.program_version)
    return {"data": str(data), "store": resp.store, "terminal": resp.terminal, "hq": hq,
            "program_version": resp.program_version}


