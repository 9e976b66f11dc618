"""The loyalty receipt of a recorded sale: a drivers `Receipt` built from the ledger and the
member's view, the print-job id that makes a queued receipt print once, and the spooler that
renders and spools receipts off the writer thread.

`build_receipt` reads the store, so it runs on the agent's writer thread like every other
Service call; `ReceiptSpooler` only renders bytes and writes spool files, on its own thread.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import re
import threading
from collections.abc import Callable
from typing import Literal

from tillstamp.drivers.errors import DeviceError
from tillstamp.drivers.receipt import (
    CompletedMission,
    ExpiringStamps,
    MissionProgress,
    Receipt,
    SaleLine,
    render_receipt,
)
from tillstamp.drivers.spool import PrintQueue
from tillstamp.drivers.text import CodePage, format_rupiah, stamp_card
from tillstamp.loyalty import events as ev
from tillstamp.loyalty.events import Event

from .hints import personal_line
from .service import Refused, SaleResult, Service

log = logging.getLogger("tillstamp.agent")

Language = Literal["id", "en"]

CAPTIONS: dict[str, dict[str, str]] = {
    "id": {"claim": "Scan di HP kamu: klaim {n} stempel", "card": "Kartu member kamu",
           "claimed": "Stempel sudah diklaim", "where": "di {host}", "until": "berlaku s.d. {date}"},
    "en": {"claim": "Scan with your phone: claim {n} stamps", "card": "Your member card",
           "claimed": "Stamps already claimed", "where": "at {host}", "until": "valid until {date}"},
}
BLOCKS = CodePage("cp858", 19)  # a page with the block glyphs: the screen draws what paper does
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def card_text(filled: int, size: int) -> str:
    """A stamp card as the panel draws it, the same bar the receipt prints: `█████░░░░░ 5/10`."""
    return stamp_card(filled, size, BLOCKS)


def job_id(kind: str, seq: int, attempt: int = 0) -> str:
    """A print-job id safe for the spool: the sale's ledger seq names its receipt."""
    base = f"{kind}-{seq}"
    return base if attempt == 0 else f"{base}-{attempt}"


def mission_text(kind: str, progress: int, target: int) -> str:
    """A mission's progress as printed and shown: `3/5`, or `Rp 162.000 / Rp 500.000` for spend."""
    if kind == "spend_target":
        return f"{format_rupiah(progress)} / {format_rupiah(target)}"
    return f"{progress}/{target}"


def safe_name(text: str) -> str:
    """`text` with every character a file name or job id cannot hold replaced by `_`."""
    return _UNSAFE.sub("_", text)[:100]


def build_receipt(
    service: Service,
    key: str,
    *,
    store_name: str,
    language: Language = "id",
    result: SaleResult | None = None,
    copy: bool = False,
    with_card: bool = False,
) -> Receipt:
    """The loyalty receipt of the sale keyed `key`, rebuilt from the sale's own events.

    The first print and every reprint come from this one function over the ledger as it was
    when the sale committed (the member's events up to the sale's last one, viewed at the
    sale's time), so a reprint is the original: the same stamps, mission bonus, balance and
    QR. `copy` marks it SALINAN / COPY and adds what happened since (a refund, a void).
    `result` is accepted for callers that have it; nothing on the receipt depends on it.

    The member's own card QR is printed only `with_card`: a receipt is often thrown away,
    and whoever picks it up would hold a card that identifies the member at any till.
    """
    del result  # the ledger has all of it; see the docstring
    row = service.store.sale(key)
    event = service.store.sale_event(key)
    if row is None or event is None:
        raise Refused("unknown_sale", f"sale {key}: not recorded at this till")
    body = event.body
    zone = service.program.zone
    lines = tuple(
        SaleLine(ln.get("name") or ln["sku"], ln["qty"], ln["price"], ln["qty"] * ln["price"])
        for ln in body["lines"]
    )
    words = CAPTIONS[language]
    fields: dict[str, object] = {}
    qr_payload = qr_caption = None
    qr_lines: tuple[str, ...] = ()
    if row.member is not None:
        fields.update(_member_fields(service, row.member, event, language))
        if with_card and service.keys.member_signing is not None:
            qr_payload, qr_caption = service.member_card(row.member), words["card"]
    else:
        claim = service.claim_payload_for(key)
        if claim:
            c = body["claim"]
            qr_payload = claim
            qr_caption = words["claim"].format(n=c["stamps"])
            until = dt.datetime.fromtimestamp(c["expires"], dt.UTC).astimezone(zone).date()
            qr_lines = (words["where"].format(host=claim_host(service.program.claim.url)),
                        words["until"].format(date=local_date(until, language)))
            if copy and row.claimed_by is not None:
                qr_lines += (words["claimed"],)
    listed = sum(ln.amount for ln in lines)
    return Receipt(
        store_name=store_name,
        receipt_no=row.receipt,
        at=event.at.astimezone(zone),
        lines=lines,
        total=row.total,
        discount=max(0, listed - row.total),
        qr_payload=qr_payload,
        qr_caption=qr_caption,
        qr_lines=qr_lines,
        language=language,
        copy=copy,
        refunded=row.refunded if copy else 0,
        voided=copy and row.refunded >= row.total > 0,
        reversed_stamps=row.reversed if copy else 0,
        **fields,  # type: ignore[arg-type]
    )


MONTHS = {
    "id": ("Jan", "Feb", "Mar", "Apr", "Mei", "Jun", "Jul", "Agu", "Sep", "Okt", "Nov", "Des"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}


def local_date(day: dt.date, language: Language) -> str:
    """`4 Des 2026` (Indonesian) or `4 Dec 2026`: a date nobody reads the wrong way round."""
    return f"{day.day} {MONTHS[language][day.month - 1]} {day.year}"


def claim_host(url: str) -> str:
    """The site a claim QR opens, as a person types it: `klaim.kopisenja.id`."""
    host = url.split("://", 1)[-1].split("/", 1)[0]
    return host.lower()


def _sale_events(service: Service, member: str, sale: Event) -> list[Event]:
    """The member's events up to the last one the sale's own transaction appended."""
    history = service.store.member_events(member)  # in ledger order
    # Found from the end: a regular's thousands of earlier events are not walked for a receipt.
    end = _first_after(history, sale.seq)
    nxt = sale.seq + 1
    # A sale appends its earn and mission events right after it, in one transaction.
    while end < len(history) and history[end].seq == nxt and history[end].kind in (ev.EARNED, ev.MISSION):
        end += 1
        nxt += 1
    return history[:end]


def _first_after(events: list[Event], seq: int) -> int:
    """The index of the first of `events` (in ledger order) whose seq is above `seq`."""
    i = len(events)
    while i and events[i - 1].seq > seq:
        i -= 1
    return i


def _member_fields(service: Service, member: str, sale: Event,
                   language: Language) -> dict[str, object]:
    row = service.store.member(member)
    events = _sale_events(service, member, sale)
    own = events[_first_after(events, sale.seq - 1):]
    view = service.view_at(member, events, sale.at)
    zone = service.program.zone
    kinds = {m.id: m.kind for m in service.program.missions}
    done = [e for e in own if e.kind == ev.MISSION]
    offer = next((e for e in own if e.kind == ev.EARNED and e.body.get("offer")), None)
    ready = tuple(r.name for r in service.program.rewards
                  if r.allowed_for(view.tier.id) and view.balance >= r.cost)
    return {
        "member_name": (row.name if row and row.name else member[-6:]),
        "stamps_earned": sum(e.stamps for e in own if e.stamps > 0),
        "balance": view.balance,
        "card_filled": view.card_filled,
        "card_size": view.card_size,
        "tier": view.tier.name,
        "next_tier": view.next_tier.name if view.next_tier else None,
        "to_next_tier": view.to_next_tier if view.next_tier else None,
        "missions": tuple(MissionProgress(m.name, m.progress, m.target,
                                          mission_text(kinds.get(m.id, ""), m.progress, m.target))
                          for m in view.missions if not m.done and m.progress > 0),
        "completed": tuple(CompletedMission(e.body.get("name") or e.body.get("mission", ""),
                                            e.stamps, e.body.get("badge")) for e in done),
        "rewards_ready": ready,
        "expiring": tuple(ExpiringStamps(x.stamps, x.at.astimezone(zone).date()) for x in view.expiring),
        "personal": personal_line(service.program, row.name if row and row.name else "", offer, view,
                                  row.birthday if row else None, sale.at.astimezone(zone).date(), language),
    }


class ReceiptSpooler:
    """Renders receipts and spools them on its own thread, so no sale waits for the spool's fsyncs.

    `due` is what a crash could lose: sales committed with a receipt promised that is not yet
    durably in the spool. The runtime stores it (meta `receipts_due`) in each sale's own
    transaction and again when the spooler goes idle; the next start prints what is left.
    """

    def __init__(self, print_queue: PrintQueue, *, width: int = 48,
                 on_error: Callable[[str, str], None] = lambda receipt, error: None,
                 on_idle: Callable[[], None] = lambda: None, idle_s: float = 1.0) -> None:
        self.print_queue = print_queue
        self.width = width
        self.on_error = on_error
        self.on_idle = on_idle
        self.idle_s = idle_s
        self._q: queue.SimpleQueue[tuple[int | None, str, Receipt] | None] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._due: dict[int, str] = {}  # sale seq -> sale key
        self._waiting = 0
        self._thread = threading.Thread(target=self._run, name="tillstamp-receipts", daemon=True)

    def start(self) -> ReceiptSpooler:
        """Start the thread."""
        self._thread.start()
        return self

    def expect(self, seq: int, key: str) -> None:
        """Sale `seq` was committed with a receipt promised (call right after its commit)."""
        with self._cond:
            self._due[seq] = key

    def forget(self, seq: int) -> None:
        """Sale `seq` needs no receipt after all (it cannot be drawn)."""
        with self._cond:
            self._due.pop(seq, None)
            self._cond.notify_all()

    def due(self) -> list[tuple[int, str]]:
        """(seq, key) of the committed sales whose receipt is not durably spooled yet."""
        with self._cond:
            return sorted(self._due.items())

    def submit(self, seq: int | None, job: str, receipt: Receipt) -> None:
        """Render and spool `receipt` as print job `job` (of due sale `seq`); returns at once."""
        with self._cond:
            self._waiting += 1
        self._q.put((seq, job, receipt))

    def pending(self) -> int:
        """Receipts handed over and not yet spooled."""
        with self._cond:
            return self._waiting

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every promised receipt is spooled; False after `timeout` seconds.

        Promised includes a sale committed whose receipt the writer has not built yet: it is
        due from `expect` on, so a flush right after an answer waits for that receipt too.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._waiting == 0 and not self._due, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Spool what was submitted, then end the thread."""
        self._q.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        busy = False
        while True:
            try:
                item = self._q.get(timeout=self.idle_s if busy else None)
            except queue.Empty:
                busy = False
                self.on_idle()  # the due list is short again: let the runtime store it
                continue
            if item is None:
                return
            busy = True
            try:
                self._spool(*item)
            except Exception:
                # A bug here must not end the thread: the receipt stays due for the next start.
                log.exception("receipt job %s failed", item[1])
            finally:
                with self._cond:
                    self._waiting -= 1
                    self._cond.notify_all()

    def _spool(self, seq: int | None, job: str, receipt: Receipt) -> None:
        try:
            self.print_queue.submit(job, render_receipt(receipt, width=self.width))
        except OSError as e:
            # The disk refused it: it stays due, so the next start tries again.
            log.error("receipt %s not spooled: %s", receipt.receipt_no, e)
            self.on_error(receipt.receipt_no, str(e))
            return
        except (DeviceError, ValueError) as e:
            # Retrying cannot fix a receipt that does not render: report it and move on.
            log.error("receipt %s not printable: %s", receipt.receipt_no, e)
            self.on_error(receipt.receipt_no, str(e))
        if seq is not None:
            with self._cond:
                self._due.pop(seq, None)
