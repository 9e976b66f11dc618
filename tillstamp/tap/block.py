"""The loyalty block the tap prints into a POS receipt, just before its cut.

Drawn on python-escpos' `Dummy` like `drivers.receipt`, in one code page chosen once, with a
native QR (GS ( k). The POS's own settings are not known to the printer afterwards unless we
put them back, so the block starts from explicit defaults and ends by restoring them: the
defaults, then the POS's last print-mode, bold, underline, alignment, code page and size
commands, replayed in the order it sent them (the `Framer` keeps them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tillstamp.drivers.text import choose_codepage

# ESC ! 0, GS ! 0, ESC E 0, ESC - 0, ESC a 0, ESC t 0: every setting the block may touch.
DEFAULTS = b"\x1b!\x00\x1d!\x00\x1bE\x00\x1b-\x00\x1ba\x00\x1bt\x00"

_WORDS = {
    "id": {"earned": "Selamat! Kamu dapat {n} stempel", "none": "Belum ada stempel kali ini",
           "balance": "Saldo stempel: {n}", "reprint": "Cetak ulang: stempel sudah tercatat",
           "claim": "Scan untuk klaim {n} stempel", "claim_any": "Scan untuk klaim stempel"},
    "en": {"earned": "Congrats! You earned {n} stamps", "none": "No stamps this time",
           "balance": "Stamp balance: {n}", "reprint": "Reprint: stamps already recorded",
           "claim": "Scan to claim {n} stamps", "claim_any": "Scan to claim your stamps"},
}


def block_lines(result: Mapping[str, Any], language: str = "id") -> list[tuple[str, bool]] | None:
    """The text lines (text, bold) of the block for a sale result, or None when there is none."""
    w = _WORDS.get(language, _WORDS["id"])
    duplicate = bool(result.get("duplicate"))
    if result.get("member"):
        stamps = int(result.get("stamps_awarded") or 0)
        if duplicate:
            head = w["reprint"]
        else:
            head = w["earned"].format(n=stamps) if stamps > 0 else w["none"]
        out = [(head, True)]
        if result.get("balance") is not None:
            out.append((w["balance"].format(n=result["balance"]), False))
        return out
    if result.get("claim"):
        n = int(result.get("claim_stamps") or 0)
        return [(w["claim"].format(n=n) if n > 0 else w["claim_any"], True)]
    return None


def render_block(result: Mapping[str, Any], *, language: str = "id", width: int = 48,
                 restore: bytes = b"", new_line: bool = False) -> bytes:
    """ESC/POS bytes of the loyalty block for `result` (a `SaleResult.to_dict()`); b"" if none."""
    lines = block_lines(result, language)
    if lines is None:
        return b""
    # Imported here: python-escpos takes ~0.3 s to load, which `tap parse` does not need.
    from escpos.printer import Dummy

    printer = Dummy()
    page = choose_codepage(printer.profile.profile_data.get("codePages"))
    raw = printer._raw  # Dummy has no public raw write (see drivers.receipt)
    raw((b"\n" if new_line else b"") + DEFAULTS + page.select + b"\x1ba\x01")
    raw(page.encode("-" * min(width, 32)) + b"\n")
    for text, bold in lines:
        raw((b"\x1bE\x01" if bold else b"") + page.encode(text[:width]) + b"\n"
            + (b"\x1bE\x00" if bold else b""))
    claim = result.get("claim")
    if claim:
        printer.qr(str(claim), size=6 if width >= 42 else 4, native=True)
        raw(b"\n")
    raw(page.encode("-" * min(width, 32)) + b"\n")
    raw(DEFAULTS + restore)
    return bytes(printer.output)

