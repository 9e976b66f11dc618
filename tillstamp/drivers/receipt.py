"""The loyalty receipt: a `Receipt` dataclass and a pure `render_receipt(receipt) -> bytes`.

Also the short counter slips (`Slip`, `render_slip`): a redemption for the barista, a new
member's card. Every job ends with `GS V 65 0`, "feed to the cutter, then cut": the printer
feeds exactly as far as its own cutter sits from the head, so no job wastes the six blank
lines python-escpos feeds before a cut (about 150 px, 2 cm of paper per receipt).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import qrcode
from escpos.printer import Dummy

from tillstamp.drivers.text import CodePage, choose_codepage, format_rupiah, stamp_card, two_columns

Language = Literal["id", "en"]

_WORDS: dict[str, dict[str, str]] = {
    "id": {
        "no": "No", "total": "TOTAL", "member": "Member", "earned": "Selamat! Kamu dapat {n} stempel",
        "none": "Belum ada stempel kali ini", "balance": "Saldo stempel", "tier": "Tier",
        "to_next": "{n} stempel lagi ke {tier}", "top": "Tier tertinggi", "missions": "Misi",
        "expiring": "Stempel segera kedaluwarsa", "expire_line": "{n} stempel pada {d}",
        "thanks": "Terima kasih!", "copy": "*** SALINAN ***", "discount": "Diskon",
        "voided": "*** DIBATALKAN ***", "refunded": "Refund", "reversed": "{n} stempel ditarik",
        "ready": "Hadiah siap ditukar:", "completed": "Misi selesai: {name}",
        "badge": "Lencana baru: {badge}", "bonus": "+{n} stempel bonus",
    },
    "en": {
        "no": "No", "total": "TOTAL", "member": "Member", "earned": "Congrats! You earned {n} stamps",
        "none": "No stamps this time", "balance": "Stamp balance", "tier": "Tier",
        "to_next": "{n} more stamps to {tier}", "top": "Top tier", "missions": "Missions",
        "expiring": "Stamps expiring soon", "expire_line": "{n} stamps on {d}",
        "thanks": "Thank you!", "copy": "*** COPY ***", "discount": "Discount",
        "voided": "*** VOIDED ***", "refunded": "Refunded", "reversed": "{n} stamps taken back",
        "ready": "Rewards ready to redeem:", "completed": "Mission completed: {name}",
        "badge": "New badge: {badge}", "bonus": "+{n} bonus stamps",
    },
}


@dataclass(frozen=True)
class SaleLine:
    """One sale line; `unit_price` and `amount` are integers in minor units (whole Rupiah)."""

    name: str
    qty: int
    unit_price: int
    amount: int


@dataclass(frozen=True)
class MissionProgress:
    """Progress on one mission, e.g. "Beli 5 kopi" at 3 of 5; `text` overrides `3/5` (money)."""

    name: str
    progress: int
    target: int
    text: str | None = None


@dataclass(frozen=True)
class CompletedMission:
    """A mission this sale completed: its bonus stamps and badge, printed as news."""

    name: str
    stamps: int = 0
    badge: str | None = None


@dataclass(frozen=True)
class ExpiringStamps:
    """Stamps that expire on a given day."""

    stamps: int
    on: date


@dataclass(frozen=True)
class Receipt:
    """Everything a loyalty receipt prints; money in minor units, `at` an aware datetime."""

    store_name: str
    receipt_no: str
    at: datetime
    lines: tuple[SaleLine, ...]
    total: int
    store_lines: tuple[str, ...] = ()
    member_name: str | None = None
    stamps_earned: int = 0
    balance: int | None = None
    card_filled: int | None = None
    card_size: int | None = None
    tier: str | None = None
    next_tier: str | None = None
    to_next_tier: int | None = None
    missions: tuple[MissionProgress, ...] = ()
    expiring: tuple[ExpiringStamps, ...] = ()
    qr_payload: str | None = None
    qr_caption: str | None = None
    language: Language = "id"
    footer: tuple[str, ...] = field(default=())
    discount: int = 0  # sum of the lines minus the total, when positive
    completed: tuple[CompletedMission, ...] = ()
    rewards_ready: tuple[str, ...] = ()  # names of rewards the balance pays for now
    qr_lines: tuple[str, ...] = ()  # under the caption: where to scan, until when
    copy: bool = False  # a reprint: the original, marked
    refunded: int = 0  # amount refunded since (a reprint shows it)
    voided: bool = False  # refunded in full
    reversed_stamps: int = 0  # stamps taken back by the refunds
    personal: str | None = None  # one line for this member: the offer given, a birthday, a card almost full

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Receipt.at must be an aware datetime")
        if self.language not in _WORDS:
            raise ValueError(f"language must be 'id' or 'en', not {self.language!r}")


class _Writer:
    """Draws text on a Dummy printer in one chosen code page."""

    def __init__(self, printer: Dummy, page: CodePage, width: int) -> None:
        self.p = printer
        self.page = page
        self.width = width
        self._style: tuple[str, bool, bool] = ("left", False, False)

    def line(self, text: str = "", *, align: str = "left", bold: bool = False,
             big: bool = False) -> None:
        align_now, bold_now, big_now = self._style
        # Send only what changes: a 58 mm receipt over 9600 baud pays for every byte.
        if big != big_now:
            self.p.set(double_height=big, normal_textsize=not big)
        if bold != bold_now:
            self.p.set(bold=bold)
        if align != align_now:
            self.p.set(align=align)
        self._style = (align, bold, big)
        # Dummy has no public raw write; python-escpos' own text() would re-pick a code page
        # per string, and we want one page for the whole receipt, chosen once.
        # Each piece is encoded without control characters; only our own line breaks remain.
        self.p._raw(b"\n".join(self.page.encode(part) for part in text.split("\n")) + b"\n")

    def rule(self) -> None:
        self.line("-" * self.width)


def render_receipt(receipt: Receipt, *, width: int = 32, native_qr: bool = True,
                   profile: str | None = None) -> bytes:
    """Render `receipt` to ESC/POS bytes for a 58 mm (32 columns) or 80 mm (48) printer."""
    if width not in (32, 42, 48):
        raise ValueError(f"width must be 32, 42 or 48 columns, not {width}")
    printer = Dummy(profile=profile)
    page = choose_codepage(printer.profile.profile_data.get("codePages"))
    printer._raw(b"\x1b@" + page.select)
    w = _Writer(printer, page, width)
    words = _WORDS[receipt.language]
    if receipt.copy:
        w.line(words["copy"], align="center", bold=True)
    _header(w, receipt, words)
    _sale(w, receipt, words)
    _loyalty(w, receipt, words)
    if receipt.qr_payload:
        _qr(printer, w, receipt.qr_payload, receipt.qr_caption, receipt.qr_lines, native_qr)
    for text in receipt.footer or (words["thanks"],):
        w.line(text, align="center")
    if receipt.copy:
        w.line(words["copy"], align="center", bold=True)
    cut(printer)
    return printer.output


def cut(printer: Dummy) -> None:
    """Feed just to the cutter and cut (GS V 65 0), not six blank lines first."""
    printer._raw(b"\x1dVA\x00")


def _header(w: _Writer, r: Receipt, words: dict[str, str]) -> None:
    w.line(r.store_name, align="center", bold=True, big=True)
    for text in r.store_lines:
        w.line(text, align="center")
    w.rule()
    w.line(two_columns(f"{words['no']} {r.receipt_no}", r.at.strftime("%d/%m/%Y %H:%M"), w.width))
    if r.member_name:
        w.line(f"{words['member']}: {r.member_name}")
    w.rule()


def _sale(w: _Writer, r: Receipt, words: dict[str, str]) -> None:
    for item in r.lines:
        if item.qty == 1:
            w.line(two_columns(item.name, format_rupiah(item.amount), w.width))
        else:
            w.line(item.name[: w.width])
            qty = f"  {item.qty} x {format_rupiah(item.unit_price)}"
            w.line(two_columns(qty, format_rupiah(item.amount), w.width))
    w.rule()
    if r.discount > 0:
        w.line(two_columns(words["discount"], format_rupiah(-r.discount), w.width))
    w.line(two_columns(words["total"], format_rupiah(r.total), w.width), bold=True, big=True)
    if r.voided:
        w.line(words["voided"], align="center", bold=True)
    elif r.refunded > 0:
        w.line(two_columns(words["refunded"], format_rupiah(-r.refunded), w.width), bold=True)
    w.rule()


def _loyalty(w: _Writer, r: Receipt, words: dict[str, str]) -> None:
    if r.stamps_earned > 0:
        w.line(words["earned"].format(n=r.stamps_earned), align="center", bold=True)
    elif r.member_name:
        w.line(words["none"], align="center")
    if r.reversed_stamps > 0:
        w.line(words["reversed"].format(n=r.reversed_stamps), align="center")
    if r.personal:
        w.line(r.personal[: w.width], align="center")
    for done in r.completed:
        w.line(words["completed"].format(name=done.name)[: w.width], bold=True)
        if done.stamps:
            w.line(f"  {words['bonus'].format(n=done.stamps)}")
        if done.badge:
            w.line(f"  {words['badge'].format(badge=done.badge)}"[: w.width])
    if r.card_size:
        w.line(stamp_card(r.card_filled or 0, r.card_size, w.page), align="center")
    if r.balance is not None:
        w.line(two_columns(words["balance"], str(r.balance), w.width))
    if r.tier:
        w.line(two_columns(words["tier"], r.tier, w.width))
        if r.next_tier and r.to_next_tier is not None:
            w.line(words["to_next"].format(n=r.to_next_tier, tier=r.next_tier))
        elif not r.next_tier:
            w.line(words["top"])
    if r.missions:
        w.line(words["missions"], bold=True)
        for m in r.missions:
            progress = m.text or f"{m.progress}/{m.target}"
            if len(m.name) + len(progress) + 3 > w.width:
                # Too long for one line: cutting the name would leave "- Belanj Rp 162.000 /...".
                w.line(f"- {m.name}"[: w.width])
                w.line(progress.rjust(w.width))
            else:
                w.line(two_columns(f"- {m.name}", progress, w.width))
    if r.expiring:
        w.line(words["expiring"], bold=True)
        for e in r.expiring:
            w.line(words["expire_line"].format(n=e.stamps, d=e.on.strftime("%d/%m/%Y")))
    if r.rewards_ready:
        w.line(words["ready"], bold=True)
        for name in r.rewards_ready:
            w.line(f"- {name}"[: w.width])
    if r.stamps_earned or r.card_size or r.balance is not None or r.tier or r.missions:
        w.rule()


def _qr(printer: Dummy, w: _Writer, payload: str, caption: str | None, notes: tuple[str, ...],
        native: bool) -> None:
    module = 6 if w.width >= 42 else 4
    w.line("", align="center")
    if native and printer.profile.supports("qrCode"):
        printer.qr(payload, size=module, native=True)
        printer._raw(b"\n")
    else:
        # python-escpos' image path prints a warning on stdout for profiles without a paper
        # width; the raster command is simple enough to build here instead.
        printer._raw(qr_raster(payload, module))
    if caption:
        w.line(caption, align="center")
    for text in notes:
        w.line(text, align="center")


@dataclass(frozen=True)
class Slip:
    """A short counter slip: a redemption for the barista, or a new member's card."""

    store_name: str
    title: str
    at: datetime
    headline: str = ""  # printed large: the reward's or the member's name
    lines: tuple[str, ...] = ()
    qr_payload: str | None = None
    qr_caption: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Slip.at must be an aware datetime")


def render_slip(slip: Slip, *, width: int = 32, native_qr: bool = True,
                profile: str | None = None) -> bytes:
    """Render a counter slip to ESC/POS bytes; the same code page and cut as a receipt."""
    if width not in (32, 42, 48):
        raise ValueError(f"width must be 32, 42 or 48 columns, not {width}")
    printer = Dummy(profile=profile)
    page = choose_codepage(printer.profile.profile_data.get("codePages"))
    printer._raw(b"\x1b@" + page.select)
    w = _Writer(printer, page, width)
    w.line(slip.store_name, align="center", bold=True)
    w.line(slip.title, align="center")
    w.line(slip.at.strftime("%d/%m/%Y %H:%M"), align="center")
    w.rule()
    if slip.headline:
        w.line(slip.headline[:width], align="center", bold=True, big=True)
    for text in slip.lines:
        w.line(text[:width], align="center")
    if slip.qr_payload:
        _qr(printer, w, slip.qr_payload, slip.qr_caption, (), native_qr)
    cut(printer)
    return printer.output


def qr_raster(payload: str, module: int) -> bytes:
    """A QR code as one GS v 0 raster image, `module` dots per module, 4-module quiet zone."""
    code = qrcode.QRCode(border=4, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(payload)
    code.make(fit=True)
    matrix = code.get_matrix()
    width_dots = len(matrix[0]) * module
    row_bytes = (width_dots + 7) // 8
    data = bytearray()
    for row in matrix:
        bits = bytearray(row_bytes)
        for x, dark in enumerate(row):
            if dark:
                for dx in range(module):
                    pos = x * module + dx
                    bits[pos // 8] |= 0x80 >> (pos % 8)
        data += bytes(bits) * module
    height = len(matrix) * module
    header = b"\x1dv0\x00" + row_bytes.to_bytes(2, "little") + height.to_bytes(2, "little")
    return header + bytes(data) + b"\n"
