"""`tillstamp init|member|sale|reward|claim|ledger`: the till's own commands."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import COMMON, EXAMPLE_PROGRAM, Parser, UsageError, data_arg, emit, item_failed, kv

if TYPE_CHECKING:
    from ..agent.till import Till


def _till(args: argparse.Namespace) -> Till:
    from ..agent.till import open_till

    return open_till(data_arg(args))


# -- init ---------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from ..agent.till import init_till

    data = data_arg(args)
    program = Path(args.program) if args.program else EXAMPLE_PROGRAM
    if args.hq or args.code:
        if not (args.hq and args.code):
            raise UsageError("init: --hq and --code go together")
        from ..agent.enroll import init_with_hq

        result = init_with_hq(data, hq=args.hq, code=args.code, store_name=args.store_name or "")
        emit(args, result, kv)
        return 0
    if not (args.store and args.terminal):
        raise UsageError("init: --store and --terminal are required (or --hq URL --code CODE)")
    cfg = init_till(data, store=args.store, terminal=args.terminal, program=program,
                    store_name=args.store_name or "", printer=args.printer or "")
    emit(args, {"data": str(data), "store": cfg.store, "terminal": cfg.terminal,
                "program": str(program), "config": str(data / "tillstamp.toml")}, kv)
    return 0


# -- members ------------------------------------------------------------------------------


def cmd_member_enroll(args: argparse.Namespace) -> int:
    with _till(args) as till:
        consent = args.consent.split(",") if args.consent else []
        row = till.service.enroll(args.phone, args.name, args.email, args.birthday, consent)
        out: dict[str, Any] = {"member": row.id, "phone": row.phone, "name": row.name}
        failed = None
        if till.keys.member_signing is not None:
            card = out["card"] = till.service.member_card(row.id)
            if args.print_card:
                # After the enrolment committed: a printer that is away costs the slip, not the
                # member, so the enrolment is reported and the exit status says the rest.
                try:
                    out["printer"] = _print_card(till, row.id, card, args.printer)
                except UsageError as e:
                    failed = str(e)
        emit(args, out, kv)
    if failed:
        print(f"tillstamp: enrolled, but the card was not printed: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_member_show(args: argparse.Namespace) -> int:
    ref = args.phone or args.id or args.qr
    if not ref:
        raise UsageError("member show: give --phone, --id or --qr")
    from ..agent.receipts import mission_text

    with _till(args) as till:
        row = till.service.identify(ref)
        out = till.member_json(row.id)
        kinds = {m.id: m.kind for m in till.program.missions}
        for m in out["missions"]:  # a spend mission in Rupiah: `Rp 162.000 / Rp 500.000`
            m["text"] = mission_text(kinds.get(m["id"], ""), m["progress"], m["target"])
        emit(args, out, _show_member)
    return 0


def _show_member(d: dict[str, Any]) -> str:
    lines = [f"{d['name'] or '(no name)'}  {d['member']}  {d['phone'] or ''}",
             f"  balance {d['balance']} stamps, card {d['card']}, tier {d['tier_name']}"
             + (f" ({d['to_next_tier']} to {d['next_tier']})" if d["next_tier"] else "")]
    for m in d["missions"]:
        lines.append(f"  mission {m['name']}: {m['text']}{' done' if m['done'] else ''}")
    for x in d["expiring"]:
        lines.append(f"  {x['stamps']} stamps expire {x['at'][:10]}")
    return "\n".join(lines)


def cmd_member_card(args: argparse.Namespace) -> int:
    if not args.out and not args.print:
        raise UsageError("member card: give --out FILE.png or --print")
    with _till(args) as till:
        row = till.service.identify(args.member)
        payload = till.service.member_card(row.id)
        out: dict[str, Any] = {"member": row.id, "payload": payload, "out": args.out}
        if args.out:
            from ..agent.card import MemberCard, card_image

            shop = till.config.store_name or till.config.store
            try:
                card_image(MemberCard(payload, shop, row.name or "", row.id)).save(args.out, format="PNG")
            except OSError as e:
                raise UsageError(f"member card: cannot write {args.out}: {e.strerror or e}") from None
        if args.print:
            out["printer"] = _print_card(till, row.id, payload, args.printer)
        emit(args, out, lambda d: f"wrote {d['out']}" if d["out"] else f"printed on {d['printer']}")
    return 0


def _print_card(till: Any, member: str, payload: str, url: str | None) -> str:
    from ..agent.receipts import CAPTIONS
    from ..agent.runtime import printer_width
    from ..drivers.errors import DeviceError
    from ..drivers.printer import open_printer
    from ..drivers.receipt import Slip, render_slip

    cfg = till.config
    url = url or cfg.printer
    if not url:
        raise UsageError("member card: no printer in tillstamp.toml; give --printer URL")
    row = till.store.member(member)
    words = CAPTIONS[cfg.language]
    slip = Slip(cfg.store_name or cfg.store, words["card"], dt.datetime.now().astimezone(),
                headline=(row.name or "") if row else "", lines=(member,), qr_payload=payload)
    data = render_slip(slip, width=printer_width(cfg.extra))
    try:
        with open_printer(url) as printer:
            printer.write(data)
    except DeviceError as e:
        raise UsageError(f"member card: printer {url}: {e}") from None
    return url


# -- sales ----------------------------------------------------------------------------------


def _read_sales(stream: Any) -> Iterator[tuple[int, Any]]:
    """(line number, sale dict, or a (reason, message) refusal) for each JSON value in `stream`.

    `stream` yields bytes lines. Accepts JSON lines and JSON objects spread over several lines
    (the README's `echo '{...}'`), in any mix. A value is handed on as soon as its last line
    arrives, so each sale is recorded and answered while the POS is still writing the next: the
    crash test relies on it. A line that is not UTF-8, a value nested too deeply or holding a
    lone surrogate is refused on its own; the lines after it go on.
    """
    from ..agent.failures import find_surrogate

    decoder = json.JSONDecoder()
    buf, first = "", 0
    for n, raw in enumerate(stream, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, ("invalid_utf8", f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}")
            buf = ""
            continue
        if not buf.strip():
            buf, first = "", n
        buf += line
        while buf.strip():
            text = buf.lstrip()
            try:
                value, end = decoder.raw_decode(text)
            except json.JSONDecodeError as e:
                if e.pos >= len(text.rstrip()):
                    break  # the value goes on in the next line
                yield first, ("invalid_json",
                              f"not valid JSON: {e.msg} at line {first + e.lineno - 1} column {e.colno}")
                buf = ""  # start again at the next line
                break
            except RecursionError:
                yield first, ("invalid_json", "not valid JSON: nested too deeply")
                buf = ""
                break
            # A lone surrogate can only come from a \u escape (the bytes were UTF-8), so a
            # value whose text holds none is not walked.
            if text.find("\\u", 0, end) >= 0 and find_surrogate(value):
                yield first, ("invalid_text",
                              "a string holds an unpaired surrogate (like \\ud800), which is not text")
            else:
                yield first, value
            buf = text[end:]
            first = n
    if buf.strip():
        yield first, ("invalid_json", "not valid JSON: the input ended inside a value")


def cmd_sale_record(args: argparse.Namespace) -> int:
    if args.file != "-" and not os.path.exists(args.file):
        raise UsageError(f"sale record: {args.file}: no such file")
    status = 0
    if args.file != "-":
        stream: Any = open(args.file, "rb")  # noqa: SIM115
    elif hasattr(sys.stdin, "buffer"):
        stream = sys.stdin.buffer
    else:  # a text stream put in place of stdin (an embedding program, a test)
        stream = (line.encode("utf-8", "surrogatepass") for line in sys.stdin)
    try:
        with _till(args) as till:
            # What start-up made (modules, the program, the keys; sqlite_utils imports pandas
            # and numpy when they are installed) lives as long as the command: kept out of the
            # collector's sight, a full collection no longer walks it (150-230 ms once in
            # 3,000 sales, docs/AGENT.md "The sale loop").
            gc.freeze()
            try:
                status = _record_lines(args, till, stream)
            finally:
                gc.unfreeze()  # a program that called main() in its own process gets it back
    finally:
        if args.file != "-":
            stream.close()
    return status


def _record_lines(args: argparse.Namespace, till: Till, stream: Any) -> int:
    from ..agent.service import Refused
    from ..loyalty.sale import SaleError, parse_sale

    status = 0
    for n, item in _read_sales(stream):
        if isinstance(item, tuple):
            status = _refuse_line(args, n, *item)
            continue
        try:
            sale = parse_sale(item, now=till.service.now())
            result = till.service.record_sale(sale)
        except SaleError as e:
            status = _refuse_line(args, n, "invalid_sale", str(e), item)
            continue
        except Refused as e:
            status = _refuse_line(args, n, e.reason, str(e), item)
            continue
        emit(args, result.to_dict(), _human_result)
    return status


def _human_result(d: dict[str, Any]) -> str:
    if d["duplicate"]:
        return f"{d['receipt']}: duplicate, nothing awarded" + (" (content differs)" if d.get("conflict") else "")
    if d["member"] is None:
        claim = f"; claim QR for {d['claim_stamps']} stamps: {d['claim']}" if d.get("claim") else ""
        return f"{d['receipt']}: no member{claim}"
    missions = f", missions {', '.join(d['missions'])}" if d.get("missions") else ""
    return (f"{d['receipt']}: +{d['stamps_awarded']} stamps for {d['member']}, "
            f"balance {d['balance']}{missions}")


def _refuse_line(args: argparse.Namespace, n: int, reason: str, message: str, item: Any = None) -> int:
    receipt = item.get("receipt") if isinstance(item, dict) else None
    item_failed(args, f"line {n}: {message}", error=reason, line=n, receipt=receipt)
    return 2


def _parse_refund_lines(specs: Sequence[str] | None) -> dict[str, int] | None:
    if not specs:
        return None
    out: dict[str, int] = {}
    for spec in specs:
        sku, sep, qty = spec.rpartition(":")
        if not sep or not sku or not qty.isdigit() or int(qty) <= 0:
            raise UsageError(f"--line {spec!r}: expected SKU:QTY with QTY > 0")
        out[sku] = out.get(sku, 0) + int(qty)
    return out


def cmd_sale_refund(args: argparse.Namespace) -> int:
    lines = _parse_refund_lines(args.line)
    with _till(args) as till:
        out = till.service.refund(args.receipt, lines, day=args.day)
        emit(args, out.to_dict(), kv)
    return 0


# -- rewards, claims ------------------------------------------------------------------------


def cmd_reward_list(args: argparse.Namespace) -> int:
    with _till(args) as till:
        rewards = [{"id": r.id, "name": r.name, "cost": r.cost, "tiers": sorted(r.tiers)} for r in till.program.rewards]
        if not args.member:
            emit(args, rewards, lambda rs: "\n".join(
                f"{r['id']:<16} {r['cost']:>4} stamps  {r['name']}" for r in rs))
            return 0
        row = till.service.identify(args.member)
        view = till.service.view(row.id)
        for r, rw in zip(rewards, till.program.rewards, strict=True):
            r["can_redeem"] = rw.allowed_for(view.tier.id) and view.balance >= rw.cost
        out = {"member": row.id, "name": row.name, "balance": view.balance, "tier": view.tier.id,
               "rewards": rewards}
        emit(args, out, _human_rewards)
    return 0


def _human_rewards(d: dict[str, Any]) -> str:
    now = [r for r in d["rewards"] if r["can_redeem"]]
    lines = [f"{d['name'] or d['member']}: {d['balance']} stamps, tier {d['tier']}",
             f"can redeem now: {', '.join(r['id'] for r in now) if now else 'nothing yet'}"]
    for r in d["rewards"]:
        mark = "now" if r["can_redeem"] else (
            f"{r['cost'] - d['balance']} more" if r["cost"] > d["balance"] else "not for this tier")
        lines.append(f"  {r['id']:<16} {r['cost']:>4} stamps  {r['name']}  ({mark})")
    return "\n".join(lines)


def cmd_reward_redeem(args: argparse.Namespace) -> int:
    with _till(args) as till:
        out = till.service.redeem(args.member, args.reward)
        emit(args, out.to_dict(), kv)
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    with _till(args) as till:
        out = till.service.claim(args.payload, args.member)
        emit(args, out.to_dict(), kv)
    return 0


# -- ledger ----------------------------------------------------------------------------------


def cmd_ledger_show(args: argparse.Namespace) -> int:
    with _till(args) as till:
        if args.member:
            member = till.service.identify(args.member, learn=False).id
            events = [e for e in till.store.member_events(member) if e.seq > args.after]
        else:
            events = till.store.events(after_seq=args.after)
        if args.receipt:
            keys = {row.key for row in till.store.sales_by_receipt(args.receipt)}
            if not keys:
                raise UsageError(f"ledger show: receipt {args.receipt}: no such sale at this till")
            events = [e for e in events if e.ref in keys]
        if args.limit is not None:
            events = events[: args.limit]
        zone = till.program.zone

        def human(d: dict[str, Any]) -> str:
            # The store's wall clock with its offset for people; the wire form (UTC) for programs.
            at = dt.datetime.fromisoformat(d["at"]).astimezone(zone).isoformat(timespec="seconds")
            return (f"{d['seq']:>6} {at} {d['kind']:<18} {d['member'] or '-':<26} "
                    f"{d['stamps']:>+4} {d['ref'] or ''}")

        for e in events:
            emit(args, e.to_wire(), human)
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    from ..agent import ledger

    with _till(args) as till:
        report = ledger.verify(till.store, shown=till.service.balance)
        emit(args, report.to_dict(), lambda d: "ledger ok: {events} events, {members} members".format(**d)
             if d["ok"] else "ledger NOT ok:\n  " + "\n  ".join(d["problems"]))
    return 0 if report.ok else 1


def cmd_ledger_rebuild(args: argparse.Namespace) -> int:
    from ..agent import ledger

    with _till(args) as till:
        same = ledger.rebuild(till.store)
        emit(args, {"rebuilt": True, "unchanged": same}, lambda d: "projections rebuilt" + ("" if same else " (they had drifted)"))
    return 0


def register(sub: Any) -> None:
    """Add the till's own commands to the CLI."""
    p = sub.add_parser("init", parents=[COMMON], help="create the data folder: database, keys, program, config",
                       description="Create the data folder: database, terminal keys, program and tillstamp.toml.")
    p.add_argument("--store", help="this store's id")
    p.add_argument("--terminal", help="this till's id")
    p.add_argument("--program", help="program TOML (default: the example coffee-shop program)")
    p.add_argument("--store-name", help="name printed on receipts")
    p.add_argument("--printer", help="printer URL (default: file://DATA/receipts.bin)")
    p.add_argument("--hq", help="head office URL, to enrol this till (with --code)")
    p.add_argument("--code", help="one-time enrolment code from head office")
    p.set_defaults(func=cmd_init)

    member = sub.add_parser("member", help="enrol, look up and print members").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = member.add_parser("enroll", parents=[COMMON], help="enrol a new member", description="Enrol a new member at this till.")
    p.add_argument("--phone", required=True, help="phone number, any Indonesian format")
    p.add_argument("--name")
    p.add_argument("--email")
    p.add_argument("--birthday", help="YYYY-MM-DD")
    p.add_argument("--consent", help="channels the member agreed to: whatsapp,email,sms")
    p.add_argument("--print-card", action="store_true", help="print the member's card QR on a slip")
    p.add_argument("--printer", metavar="URL", help="printer URL (default: [devices] printer)")
    p.set_defaults(func=cmd_member_enroll)
    p = member.add_parser("show", parents=[COMMON], help="show a member's balance, tier, card and missions",
                          description="Show a member found by phone, member id or QR payload.")
    p.add_argument("--phone")
    p.add_argument("--id")
    p.add_argument("--qr", help="member card QR payload")
    p.set_defaults(func=cmd_member_show)
    p = member.add_parser("card", parents=[COMMON], help="write a member's QR card as PNG or print it",
                          description="Write the member's card QR (a signed token) to a PNG, or print it "
                                      "on a slip of its own (sale receipts never carry it).")
    p.add_argument("member", metavar="ID", help="member id, phone or card payload")
    p.add_argument("--out", help="PNG file to write")
    p.add_argument("--print", action="store_true", help="print the card on the receipt printer")
    p.add_argument("--printer", metavar="URL", help="printer URL (default: [devices] printer)")
    p.set_defaults(func=cmd_member_card)

    sale = sub.add_parser("sale", help="record and refund sales").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = sale.add_parser("record", parents=[COMMON], help="record sales from a JSON file or JSON lines ('-': stdin)",
                        description="Record sales (one JSON object, or JSON lines); prints one JSON result per sale "
                                    "after it is committed.")
    p.add_argument("file", metavar="FILE", help="JSON file or '-' for stdin")
    p.set_defaults(func=cmd_sale_record)
    p = sale.add_parser("refund", parents=[COMMON], help="refund (void) a sale or some of its lines",
                        description="Refund a sale in full, or --line SKU:QTY for part; its stamps are taken back.")
    p.add_argument("receipt")
    p.add_argument("--line", action="append", metavar="SKU:QTY", help="refund only these units (repeatable)")
    p.add_argument("--day", help="business day YYYY-MM-DD, when receipt numbers restart daily")
    p.set_defaults(func=cmd_sale_refund)

    reward = sub.add_parser("reward", help="list and redeem rewards").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = reward.add_parser("list", parents=[COMMON], help="the rewards catalogue", description="List the rewards catalogue.")
    p.add_argument("--member", help="mark what this member can redeem now")
    p.set_defaults(func=cmd_reward_list)
    p = reward.add_parser("redeem", parents=[COMMON], help="redeem a reward for a member", description="Redeem a reward.")
    p.add_argument("reward", metavar="REWARD")
    p.add_argument("--member", required=True, help="member id, phone or card payload")
    p.set_defaults(func=cmd_reward_redeem)

    p = sub.add_parser("claim", parents=[COMMON], help="give a member the stamps of a receipt-claim QR",
                       description="Claim the stamps of a receipt-claim QR for a member (once per receipt).")
    p.add_argument("payload", metavar="PAYLOAD")
    p.add_argument("--member", required=True, help="member id, phone or card payload")
    p.set_defaults(func=cmd_claim)

    lg = sub.add_parser("ledger", help="show, verify or rebuild the ledger").add_subparsers(
        dest="sub", metavar="ACTION", required=True, parser_class=Parser)
    p = lg.add_parser("show", parents=[COMMON], help="list events", description="List ledger events in order.")
    p.add_argument("--after", type=int, default=0, help="only events with seq > N")
    p.add_argument("--limit", type=int, default=None, help="at most N events")
    p.add_argument("--member", help="only this member's events (id, phone or card payload)")
    p.add_argument("--receipt", help="only the events of this sale (its earn, refunds, claim)")
    p.set_defaults(func=cmd_ledger_show)
    p = lg.add_parser("verify", parents=[COMMON], help="check hash chain, sequence and projections",
                      description="Check the hash chain, the sequence, balances and projections; exit 1 if wrong.")
    p.set_defaults(func=cmd_ledger_verify)
    p = lg.add_parser("rebuild", parents=[COMMON], help="recompute projections from the ledger",
                      description="Recompute every projection from the ledger.")
    p.set_defaults(func=cmd_ledger_rebuild)

