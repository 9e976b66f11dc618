"""Device commands for the `tillstamp` CLI: decode, scan listen, print preview, print test."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tillstamp.drivers.receipt import Receipt

from tillstamp.drivers.errors import DeviceConfigError, DeviceError, DeviceUnavailable
from tillstamp.drivers.events import ScanEvent, StateEvent

from .base import COMMON, wants_json

Subparsers = argparse._SubParsersAction  # argparse exposes no public name for it


def _fail(message: str, status: int = 2) -> int:
    print(f"tillstamp: error: {message}", file=sys.stderr)
    return status


def register(subparsers: Subparsers) -> Subparsers:
    """Add `decode`, `scan` and `print` to the main CLI; returns the `print` subparsers."""
    p = subparsers.add_parser("decode", parents=[COMMON],
                              help="read QR codes in image files, one line (or JSON line) each")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG/WebP/GIF files")
    p.set_defaults(func=cmd_decode)

    scan = subparsers.add_parser("scan", help="barcode scanner tools")
    scan_sub = scan.add_subparsers(dest="scan_command", required=True, metavar="COMMAND")
    p = scan_sub.add_parser("listen", parents=[COMMON],
                            help="print each scan from a scanner URL, one line (or JSON line) each")
    p.add_argument("url", metavar="URL", help="serial:///dev/ttyUSB0, /dev/pts/3, loop://, "
                   "socket://HOST:PORT, stdin://")
    p.add_argument("--prefix", default=None, help="bytes before each scan (STX, text...)")
    p.add_argument("--suffix", default=None, help="end of a scan: CR, LF, CRLF or TAB")
    p.add_argument("--baudrate", type=int, default=None, help="serial speed (default 9600)")
    p.add_argument("--count", type=int, default=None, help="stop after N scans")
    p.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    p.set_defaults(func=cmd_scan_listen)

    printing = subparsers.add_parser("print", help="receipt printer tools")
    print_sub = printing.add_subparsers(dest="print_command", required=True, metavar="COMMAND")
    add_print_commands(print_sub)
    return print_sub


def add_print_commands(print_subparsers: Subparsers) -> None:
    """Add `print preview` and `print test` to a `print` subparser group."""
    p = print_subparsers.add_parser("preview", parents=[COMMON],
                                    help="render an ESC/POS file to a PNG receipt")
    p.add_argument("file", metavar="FILE.bin", help="captured ESC/POS bytes")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--columns", type=int, default=48, choices=(32, 42, 48),
                   help="paper width in Font A columns (32 = 58 mm, 48 = 80 mm)")
    p.set_defaults(func=cmd_print_preview)

    p = print_subparsers.add_parser("test", parents=[COMMON], help="print a test receipt on a printer URL")
    p.add_argument("url", metavar="URL", help="escpos+tcp://HOST:9100, escpos+serial:///dev/ttyS0, "
                   "escpos+usb://VID:PID, file:///path/out.bin, dummy://")
    p.add_argument("--width", type=int, default=48, choices=(32, 48), help="columns (58/80 mm)")
    p.add_argument("--image-qr", action="store_true", help="send the QR as an image")
    p.set_defaults(func=cmd_print_test)


def cmd_decode(args: argparse.Namespace) -> int:
    """`tillstamp decode IMAGE...`."""
    from tillstamp.drivers.camera import read_image
    from tillstamp.drivers.qr import decode_qr

    status = 0
    for name in args.images:
        if not Path(name).is_file():
            status = _fail(f"no such image: {name}")
            continue
        try:
            image = read_image(name)
        except DeviceUnavailable as e:
            status = _fail(str(e))
            continue
        start = time.perf_counter()
        texts = decode_qr(image)
        ms = round((time.perf_counter() - start) * 1000, 2)
        if wants_json(args):
            print(json.dumps({"file": name, "texts": texts, "ms": ms}, ensure_ascii=False), flush=True)
        else:
            found = " | ".join(texts) if texts else "no QR code"
            print(f"{name}: {found} ({ms} ms)", flush=True)
    return status


def cmd_scan_listen(args: argparse.Namespace) -> int:
    """`tillstamp scan listen URL`."""
    from tillstamp.drivers.scanner import scanner_reader

    events: queue.Queue[ScanEvent] = queue.Queue()

    def on_state(e: StateEvent) -> None:
        print(f"scanner {e.state.value}{': ' + e.detail if e.detail else ''}", file=sys.stderr)

    try:
        reader = scanner_reader(args.url, events.put, on_state=on_state, baudrate=args.baudrate,
                                prefix=args.prefix, suffix=args.suffix)
    except DeviceConfigError as e:
        return _fail(str(e))
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    seen = 0
    with reader:
        while args.count is None or seen < args.count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                event = events.get(timeout=0.2 if left is None else min(left, 0.2))
            except queue.Empty:
                if not reader.alive:
                    break  # the input ended (stdin://) or the URL failed for good
                continue
            if wants_json(args):
                print(json.dumps({"payload": event.payload, "source": event.source},
                                 ensure_ascii=False), flush=True)
            else:
                print(event.payload, flush=True)
            seen += 1
    return 0


def cmd_print_preview(args: argparse.Namespace) -> int:
    """`tillstamp print preview FILE.bin --out receipt.png`."""
    from tillstamp.drivers.escpos_decode import decode
    from tillstamp.drivers.preview import render_png

    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror}")
    document = decode(data)
    try:
        render_png(document, args.out, columns=args.columns)
    except OSError as e:
        return _fail(f"cannot write {args.out}: {e.strerror}")
    if wants_json(args):
        print(json.dumps({"lines": document.text, "qr": document.qr, "out": args.out},
                         ensure_ascii=False))
    else:
        print(f"wrote {args.out}: {len(document.text)} lines, {len(document.qr)} QR codes")
    return 0


def sample_receipt(width: int = 48) -> Receipt:
    # Imported here: python-escpos takes ~0.3 s to load, which every other command would pay.
    from tillstamp.drivers.receipt import ExpiringStamps, MissionProgress, Receipt, SaleLine

    """A sample receipt exercising every section (accents, card, tier, missions, QR)."""

    at = datetime.now(timezone(timedelta(hours=7)))
    return Receipt(
        store_name="Café Señor", store_lines=("Jl. Kemang Raya 8", "Jakarta Selatan"),
        receipt_no="TEST-0001", at=at, member_name="José Santoso",
        lines=(SaleLine("Kopi Susu Gula Aren", 2, 25000, 50000), SaleLine("Roti Bakar", 1, 18000, 18000)),
        total=68000, stamps_earned=3, balance=8, card_filled=8, card_size=10, tier="Silver",
        next_tier="Gold", to_next_tier=12, missions=(MissionProgress("Coba 3 menu baru", 1, 3),),
        expiring=(ExpiringStamps(2, (at + timedelta(days=7)).date()),),
        qr_payload="TS1TESTRECEIPT", qr_caption="Scan untuk klaim 3 stempel",
        footer=("Terima kasih!", f"Tes printer {width} kolom"),
    )


def cmd_print_test(args: argparse.Namespace) -> int:
    """`tillstamp print test URL`."""
    from tillstamp.drivers.printer import open_printer
    from tillstamp.drivers.receipt import render_receipt

    data = render_receipt(sample_receipt(args.width), width=args.width, native_qr=not args.image_qr)
    try:
        with open_printer(args.url) as printer:
            printer.write(data)
            status = printer.status()
    except DeviceConfigError as e:
        return _fail(str(e))
    except DeviceError as e:
        return _fail(f"printer not ready: {e}", status=1)
    report = {"url": args.url, "bytes": len(data), "online": status.online, "paper": status.paper}
    if wants_json(args):
        print(json.dumps(report))
    else:
        online = {True: "online", False: "offline", None: "status unknown"}[status.online]
        print(f"printed a test receipt on {args.url}: {online}, paper {status.paper}")
    return 0
