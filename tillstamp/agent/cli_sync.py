"""`tillstamp sync push|pull|status|enroll`, and enrolling a till with head office.

Two ways to join HQ (see docs/SYNC.md, "Enrolment"):
- a new till: `tillstamp init --hq URL --code CODE` creates the data folder with the ids HQ
  gives (the code was issued for a store, optionally for a terminal id);
- a till that ran alone: `tillstamp sync enroll --hq URL --code CODE` keeps its store and
  terminal ids (the code must be for that store; HQ refuses a terminal id already taken),
  hands the member-card role to HQ, and its whole ledger then syncs up from seq 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ..loyalty import tokens
from ..sync.client import (
    MAX_BYTES,
    MAX_EVENTS,
    RequestsTransport,
    RetryPolicy,
    SyncClient,
    Transport,
    enroll,
    errors,
)
from .cli import COMMON, EXAMPLE_PROGRAM, Parser, UsageError, emit
from .config import CONFIG_NAME, ConfigError, data_dir, load_config, render_config
from .keys import Keys
from .sync_store import SyncStore, client_for
from .till import Till, init_till, open_till


def _set_hq_url(data: Path, hq: str) -> None:
    cfg = load_config(data)
    tmp = data / (CONFIG_NAME + ".tmp")
    tmp.write_text(render_config(dataclasses.replace(cfg, hq_url=hq, program=Path(cfg.extra["till"]["program"]))),
                   encoding="utf-8")
    tmp.replace(data / CONFIG_NAME)


def _refused(e: errors.SyncError) -> UsageError:
    return UsageError(f"head office refused: {e}")


def init_with_hq(data: Path, *, hq: str, code: str, store_name: str = "", program: Path | None = None,
                 transport: Transport | None = None) -> dict[str, Any]:
    """Create a new till's data folder with the ids head office assigns for `code`."""
    if (data / CONFIG_NAME).exists():
        raise ConfigError(f"{data}: already initialised; use `tillstamp sync enroll` for an existing till")
    key = tokens.new_private_key()
    t = transport or RequestsTransport(hq)
    try:
        resp = enroll(t, key, code)
    except errors.Rejected as e:
        raise _refused(e) from None
    cfg = init_till(data, store=resp.store, terminal=resp.terminal, program=program or EXAMPLE_PROGRAM,
                    store_name=store_name, standalone=False)
    if resp.program is not None:
        (data / "program.hq.json").write_text(json.dumps(resp.program, indent=2, ensure_ascii=False))
    keys = Keys(resp.terminal, key, None,
                {k: tokens.public_from_bytes(bytes.fromhex(v)) for k, v in resp.member_keys.items()})
    keys.save(cfg.keys_dir)
    _set_hq_url(data, hq)
    _record_enrolment(data, hq, resp.member_keys, resp.program, resp.program_version)
    return {"data": str(data), "store": resp.store, "terminal": resp.terminal, "hq": hq,
            "program_version": resp.program_version}


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
    try:
        resp = enroll(t, keys.terminal, code, terminal=cfg.terminal, store=cfg.store, member_key=keys.member_signing)
    except errors.Rejected as e:
        raise _refused(e) from None
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


def _client(till: Till, args: argparse.Namespace) -> SyncClient:
    if till.sync is None:
        raise UsageError("this till is not enrolled with head office (tillstamp sync enroll --hq URL --code CODE)")
    policy = RetryPolicy(attempts=args.attempts, timeout_s=args.timeout, max_wait_s=min(60.0, args.timeout))
    return client_for(till.store, till.keys, till.sync, till.config.hq_url, policy=policy,
                      max_events=args.batch)


def cmd_push(args: argparse.Namespace) -> int:
    with open_till(data_dir(getattr(args, "data", None))) as till:
        client = _client(till, args)
        try:
            report = client.push(retry_parked=args.retry_parked)
        except (errors.Rejected, errors.Parked) as e:
            raise _refused(e) from None
        except errors.Retryable as e:
            sync = till.sync
            assert sync is not None
            emit(args, {"error": "offline", "message": str(e), "acked": sync.acked(),
                        "waiting": sync.last_seq() - sync.acked()})
            return 1
        emit(args, report.to_dict(), lambda d: "pushed {pushed}, acked {acked}, waiting {waiting}".format(**d))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    with open_till(data_dir(getattr(args, "data", None))) as till:
        client = _client(till, args)
        try:
            report = client.pull()
        except errors.Rejected as e:
            raise _refused(e) from None
        except errors.Retryable as e:
            emit(args, {"error": "offline", "message": str(e)})
            return 1
        emit(args, report.to_dict(), lambda d: "pulled {changes} changes in {pages} pages".format(**d))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with open_till(data_dir(getattr(args, "data", None))) as till:
        if till.sync is None:
            raise UsageError("this till is not enrolled with head office")
        emit(args, till.sync.status(till.program.offline), _human_status)
    return 0


def _human_status(d: dict[str, Any]) -> str:
    x = d["exposure"]
    return "\n".join([
        f"terminal {d['terminal']} -> {d['hq']}",
        f"  events waiting {d['waiting']} (acked {d['acked']} of {d['last_seq']})",
        f"  last success {d['last_success'] or 'never'}, clock offset {d['clock_offset_s']:+.1f}s",
        (f"  offline exposure: {x['redeemed_blind']} stamps redeemed since last sync "
         f"(worst case {x['worst_overdraft_per_member']} per member, {x['worst_overdraft_total']} in all)"),
    ] + ([f"  PARKED: {d['parked']['code']}: {d['parked']['message']}"] if d["parked"] else []))


def cmd_enroll(args: argparse.Namespace) -> int:
    out = enroll_existing(data_dir(getattr(args, "data", None)), hq=args.hq, code=args.code)
    emit(args, out, lambda d: "enrolled {terminal} of store {store} with {hq}".format(**d))
    return 0


def register(sub: Any) -> None:
    """Add `tillstamp sync ...` to the CLI."""
    group = sub.add_parser("sync", help="push events to head office and pull its changes").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    for name, func, text in (("push", cmd_push, "send waiting events to head office"),
                             ("pull", cmd_pull, "apply head office's changes (members, program, keys)")):
        p = group.add_parser(name, parents=[COMMON], help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("--attempts", type=int, default=4, help="tries per request before giving up (default 4)")
        p.add_argument("--timeout", type=float, default=30.0, help="hard limit per request, seconds (default 30)")
        p.add_argument("--batch", type=int, default=MAX_EVENTS,
                       help=f"most events per batch (default {MAX_EVENTS}; a batch also stops at {MAX_BYTES >> 20} MiB)")
        if name == "push":
            p.add_argument("--retry-parked", action="store_true", help="retry a batch head office refused before")
        p.set_defaults(func=func)
    p = group.add_parser("status", parents=[COMMON], help="waiting events, last sync, clock offset, offline exposure",
                         description="Show what waits to sync, the last success, the clock offset and the "
                                     "current offline exposure.")
    p.set_defaults(func=cmd_status)
    p = group.add_parser("enroll", parents=[COMMON], help="enrol this (standalone) till with head office",
                         description="Enrol a till that ran alone; it keeps its ids, ledger and members.")
    p.add_argument("--hq", required=True, help="head office URL")
    p.add_argument("--code", required=True, help="one-time code from `tillstamp hq terminal add`")
    p.set_defaults(func=cmd_enroll)
