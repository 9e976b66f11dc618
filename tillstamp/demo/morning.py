"""The till's half of `tillstamp demo`: a morning at a Jakarta coffee shop with no hardware.

The till gets a simulated camera (a video of QR codes replayed through `video://`), a
simulated serial scanner (a pty pair: the demo types scans into the master, the scanner
driver opens the slave) and a file printer. The script talks to the agent only through the
POS API over loopback HTTP, exactly as a POS would; receipts are decoded from the printed
ESC/POS bytes and drawn as PNGs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import queue
import signal
import tempfile
import threading
import time
import tty
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..agent.config import CONFIG_NAME, load_config, render_config
from ..agent.runtime import AgentOptions, Runtime, Subscription
from ..agent.till import init_till, open_till

EXAMPLE_PROGRAM = Path(__file__).resolve().parents[2] / "examples" / "program.toml"
JAKARTA = dt.timezone(dt.timedelta(hours=7))


class DemoError(RuntimeError):
    """The scripted morning did not go as written."""


def qr_video(path: Path, payloads: list[str], *, fps: int = 10) -> None:
    """A short clip: a blank counter, then each QR held up for half a second."""
    import cv2
    import numpy as np
    import qrcode

    size = (640, 480)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    blank = np.full((size[1], size[0], 3), 235, np.uint8)
    try:
        for _ in range(3):
            writer.write(blank)
        for payload in payloads:
            img = np.array(qrcode.make(payload, box_size=1, border=4).convert("RGB"))
            scale = 440 // img.shape[0]  # whole pixels per module: a clean code survives the codec
            code = cv2.resize(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), None, fx=scale, fy=scale,
                              interpolation=cv2.INTER_NEAREST)
            frame = blank.copy()
            top, left = (size[1] - code.shape[0]) // 2, (size[0] - code.shape[1]) // 2
            frame[top:top + code.shape[0], left:left + code.shape[1]] = code
            for _ in range(fps // 2):
                writer.write(frame)
            for _ in range(3):
                writer.write(blank)
    finally:
        writer.release()


class Watcher:
    """Waits for agent events (in-process hub subscription) with a deadline."""

    def __init__(self, rt: Runtime) -> None:
        self.sub = rt.hub.subscribe(Subscription(1024))

    def wait(self, pred: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
        """The first event matching `pred`; DemoError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.sub.get(timeout=left)
            except queue.Empty:
                break
            if event is not None and pred(event):
                return event
        raise DemoError(f"no {what} within {timeout:.0f} s")


def demo_morning(now: dt.datetime) -> dt.date:
    """The day of the scripted morning: today once its 08:31 is past in Jakarta, else yesterday
    (a sale is never dated in the future)."""
    local = now.astimezone(JAKARTA)
    return local.date() if local.time() >= dt.time(8, 40) else local.date() - dt.timedelta(days=1)


def at(day: dt.date, hhmm: str) -> str:
    """`HH:MM` on `day` in Jakarta, as the ISO 8601 time a POS sends in a sale's `at`."""
    hour, minute = map(int, hhmm.split(":"))
    return dt.datetime.combine(day, dt.time(hour, minute), JAKARTA).isoformat()


def _prepare(work: Path, out: Path, day: dt.date) -> tuple[Path, dict[str, Any], int, int]:
    """A till that opened the day before: Rina is a member with some stamps already."""
    data = work / "till"
    init_till(data, store="JKT-KMG", terminal="KASIR-1", program=EXAMPLE_PROGRAM,
              store_name="Kopi Senja Kemang", printer=f"file://{(out / 'receipts.bin').resolve()}")
    from ..loyalty.sale import parse_sale

    with open_till(data) as till:
        rina = till.service.enroll("0812-1111-2222", "Rina Wijaya", consent=["whatsapp"])
        yesterday = day - dt.timedelta(days=1)
        for n in range(2):
            till.service.record_sale(parse_sale({
                "receipt": f"K-09{n}", "member": rina.id, "at": at(yesterday, f"08:1{n}"),
                "lines": [{"sku": "KOPI-SUSU-AREN", "name": "Kopi Susu Aren", "qty": 2, "price": 28000}],
                "total": 56000}, now=till.service.now()))
        card = till.service.member_card(rina.id)
    video = work / "camera.mp4"
    qr_video(video, [card])
    master, slave = pty.openpty()
    tty.setraw(slave)  # a scanner's line is bytes: no echo, no CR/LF translation
    cfg = load_config(data)
    cfg = replace(cfg, camera=f"video://{video}", scanner=f"serial://{os.ttyname(slave)}?baudrate=9600")
    (data / CONFIG_NAME).write_text(render_config(cfg), encoding="utf-8")
    return data, {"rina": rina.id}, master, slave


def _script(api: Any, rt: Runtime, watch: Watcher, master: int, people: dict[str, Any],
            day: dt.date) -> list[str]:
    """The morning, step by step; returns the story as lines. Sales carry their scripted time."""
    story: list[str] = []
    line = [{"sku": "KOPI-SUSU-AREN", "name": "Kopi Susu Aren", "qty": 1, "price": 28000}]

    def say(text: str) -> None:
        story.append(text)

    scan = watch.wait(lambda e: e["type"] == "scan" and e.get("kind") == "member", "camera scan")
    say(f"07:02 Rina shows her member QR to the camera ({scan['source'].split('://')[0]})")
    r = api.record_sale({"receipt": "K-0101", "at": at(day, "07:03"), "member": "@scan", "lines": line + [
        {"sku": "CROISSANT", "name": "Croissant Mentega", "qty": 1, "price": 22000, "category": "pastry"}],
        "total": 50000})
    say(f"07:03 K-0101 Rp 50.000 for Rina: +{r['stamps_awarded']} stamps, balance {r['balance']}")
    budi = api.enroll(phone="0813-2222-3333", name="Budi Santoso", consent=["whatsapp", "sms"])
    people["budi"] = budi["member"]
    say(f"07:10 Budi enrols at the till (member {budi['member'][-6:]})")
    r = api.record_sale({"receipt": "K-0102", "at": at(day, "07:12"), "member": "0813 2222 3333", "lines": [
        {"sku": "ES-KOPI-SUSU", "name": "Es Kopi Susu", "qty": 3, "price": 25000},
        {"sku": "ROTI-BAKAR", "name": "Roti Bakar", "qty": 1, "price": 18000}], "total": 93000})
    say(f"07:12 K-0102 Rp 93.000 for Budi by phone: +{r['stamps_awarded']} stamps")
    guest = api.record_sale({"receipt": "K-0103", "at": at(day, "07:20"), "lines": [
        {"sku": "V60", "name": "Kopi V60 Gayo", "qty": 2, "price": 35000}], "total": 70000})
    say(f"07:20 K-0103 Rp 70.000, a guest: receipt QR to claim {guest['claim_stamps']} stamps later")
    sari = api.enroll(phone="+62 857 4444 5555", name="Sari Dewi", email="sari@example.id",
                      consent=["email"])
    people["sari"] = sari["member"]
    os.write(master, sari["card"].encode() + b"\r")
    watch.wait(lambda e: e["type"] == "scan" and e.get("member") == sari["member"], "scanner scan")
    say("07:31 Sari enrols and scans her new card at the serial scanner")
    r = api.record_sale({"receipt": "K-0104", "at": at(day, "07:32"), "member": "@scan", "lines": line,
                         "total": 28000})
    say(f"07:32 K-0104 Rp 28.000 for Sari: +{r['stamps_awarded']} stamps")
    rewards = [x for x in api.rewards(member=people["rina"]) if x.get("can_redeem")]
    red = api.redeem(people["rina"], rewards[0]["id"])
    say(f"07:45 Rina redeems '{red['name']}': {red['stamps']} stamps, balance {red['balance']}")
    ref = api.refund("K-0102", {"ES-KOPI-SUSU": 1})
    say(f"08:05 Budi returns one Es Kopi Susu (K-0102): {ref['stamps']} stamps, balance {ref['balance']}")
    os.write(master, guest["claim"].encode() + b"\r")
    offer = watch.wait(lambda e: e["type"] == "scan" and e.get("kind") == "claim", "claim scan")
    dewi = api.enroll(phone="0821-6666-7777", name="Dewi Lestari", consent=["whatsapp"])
    people["dewi"] = dewi["member"]
    got = api.claim(offer["payload"], dewi["member"])
    say(f"08:30 The K-0103 guest comes back as Dewi, scans the receipt QR: +{got['stamps']} stamps")
    api.reprint("K-0101")
    say("08:31 The cashier reprints K-0101 for Rina")
    return story


def _receipts(out: Path) -> list[Path]:
    """Split the printed bytes at each cut and draw every receipt as a PNG."""
    from tillstamp.drivers.escpos_decode import Cut, Document, TextLine, decode
    from tillstamp.drivers.preview import render_png

    raw = out / "receipts.bin"
    if not raw.exists():
        return []
    doc = decode(raw.read_bytes())
    pages: list[list[Any]] = [[]]
    for block in doc.blocks:
        pages[-1].append(block)
        if isinstance(block, Cut):
            pages.append([])
    written = []
    for n, blocks in enumerate(p for p in pages if p):
        numbers = [b.text.split()[1] for b in blocks if isinstance(b, TextLine) and b.text.startswith("No ")]
        name = f"receipt-{n + 1:02d}-{numbers[0] if numbers else 'x'}.png"
        render_png(Document(blocks=blocks), out / name)
        written.append(out / name)
    return written


def run_demo(out: Path | None = None, serve: bool = False, as_json: bool = False) -> int:
    """Run the scripted morning; returns the exit status."""
    from ..pos_plugin.client import TillClient
    from ..pos_plugin.server import BackgroundServer

    started = time.monotonic()
    out = (out or Path(tempfile.mkdtemp(prefix="tillstamp-demo-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "receipts.bin").unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tillstamp-demo-till-"))
    day = demo_morning(dt.datetime.now(dt.UTC))
    data, people, master, slave = _prepare(work, out, day)
    rt = Runtime(open_till(data), AgentOptions(data=data, scan_ttl=120))
    watch = Watcher(rt)
    rt.start()
    server = BackgroundServer(rt).start()
    office = None
    try:
        api = TillClient(server.url)
        story = _script(api, rt, watch, master, people, day)
        rt.flush_prints(10)
        health = api.health()
        members = {who: api.member(mid) for who, mid in people.items()}
        from .office import head_office

        office = head_office(data, out, day, JAKARTA)
        if serve:
            _serve_until_signal(server.url, story, office.url)
    finally:
        server.stop()
        rt.shutdown()
        if office is not None:
            office.close()
        os.close(master)
        os.close(slave)
    pngs = _receipts(out)
    report = {"out": str(out), "data": str(data), "day": day.isoformat(),
              "seconds": round(time.monotonic() - started, 1),
              "story": story, "receipts": [p.name for p in pngs], "devices": health["devices"],
              "outbox_waiting": health["outbox"]["waiting"], "members": members,
              "head_office": office.report if office is not None else None}
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    if as_json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report)
    return 0


def _serve_until_signal(url: str, story: list[str], hq_url: str) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"Panel kasir / cashier panel: {url}/", flush=True)
    print(f"Kantor pusat / head office: {hq_url}/   (API {hq_url}/docs; Ctrl+C to stop)", flush=True)
    stop.wait()


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.rule(f"[bold]Kopi Senja Kemang — pagi {report['day']} / the morning of {report['day']}")
    for text in report["story"]:
        console.print(f"  {text}")
    table = Table(title="Members")
    for col in ("name", "tier", "balance", "card", "visits"):
        table.add_column(col)
    for m in report["members"].values():
        table.add_row(m["name"] or "-", m["tier_name"], str(m["balance"]), m["card_text"], str(m["visits"]))
    console.print(table)
    devices = ", ".join(f"{n}: {d['state']}" for n, d in report["devices"].items())
    console.print(f"Devices: {devices}; events waiting for HQ: {report['outbox_waiting']}")
    office = report.get("head_office")
    if office:
        console.rule("[bold]Kantor pusat / head office")
        console.print(f"  The till enrols with head office ({office['db']}) and pushes {office['pushed']} "
                      f"events; head office now knows {office['stats'].get('members', '?')} members.")
        seg = office["segment"]
        console.print(f"  Segment '{seg['name']}': {seg['count']} ({', '.join(n or '-' for n in seg['members'])})")
        tick = office["flows"]["tick"]
        console.print(f"  Welcome flow, one tick: due {tick['due']}, sent {tick['sent']}, "
                      f"skipped for lack of consent {tick['skipped']['no_consent']}; to the stand-in provider:")
        for m in office["flows"]["sent"]:
            console.print(f"    {m['channel']:<8} {m['to']:<15} {m['text']}")
    console.print(f"Receipts ({len(report['receipts'])} PNG) and report.json in [bold]{report['out']}[/]")
    console.print(f"Done in {report['seconds']} s.")
