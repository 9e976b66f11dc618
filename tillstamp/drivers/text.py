"""Receipt text: Rupiah formatting, printer code pages and what a code page can print."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# ESC t numbers in Epson's table (also python-escpos' "default" profile). CP858 is CP850 with
# the Euro sign: it prints Western accents (José, Señor) *and* the block glyphs used for the
# stamp card, so it is tried first; CP1252 has the accents but no block glyphs.
CODEPAGE_PREFERENCE: tuple[tuple[str, int], ...] = (
    ("cp858", 19),
    ("cp1252", 16),
    ("cp850", 2),
    ("cp437", 0),
)
ESC_T_TABLE: dict[int, str] = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865",
                               16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858"}

# Characters that NFKD cannot take apart but that have an obvious ASCII spelling.
_TRANSLIT = {
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2026": "...", "\u20ac": "EUR", "\u00df": "ss", "\u00e6": "ae", "\u00c6": "AE",
    "\u00f8": "o", "\u00d8": "O", "\u0142": "l", "\u0141": "L", "\u2022": "*",
    "\u25cf": "#", "\u25cb": ".", "\u2588": "#", "\u2591": ".",
}


def format_rupiah(amount: int) -> str:
    """Format an amount in whole Rupiah as `Rp 25.000` (dots group thousands)."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"amount must be an int of Rupiah, not {type(amount).__name__}")
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")


@dataclass(frozen=True)
class CodePage:
    """A printer code page: Python codec name and its ESC t number."""

    codec: str
    esc_t: int

    @property
    def select(self) -> bytes:
        """The ESC t command that selects this page."""
        return b"\x1bt" + bytes([self.esc_t])

    def can_encode(self, text: str) -> bool:
        """True when every character of `text` exists on this page."""
        try:
            text.encode(self.codec)
        except UnicodeEncodeError:
            return False
        return True

    def encode(self, text: str) -> bytes:
        """Encode `text` without control characters, transliterating what the page lacks."""
        out = bytearray()
        for ch in printable(text):
            out += self._encode_char(ch)
        return bytes(out)

    def _encode_char(self, ch: str) -> bytes:
        try:
            return ch.encode(self.codec)
        except UnicodeEncodeError:
            pass
        if ch in _TRANSLIT:
            return _TRANSLIT[ch].encode(self.codec, errors="replace")
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
        return (base or "?").encode("ascii", errors="replace")


def printable(text: str) -> str:
    """`text` without control, format or unassigned characters (Unicode category C*).

    A member name or a POS line name reaches the printer as bytes: an ESC or GS inside it
    would be a command (`ESC p` kicks the cash drawer, `GS V` cuts), and NUL, CR or a C1
    control can desynchronise what follows. Newlines are dropped too: one text, one line.
    """
    if text.isprintable():
        return text  # the common case, checked in C
    return "".join(ch for ch in text if not unicodedata.category(ch).startswith("C"))


def choose_codepage(available: dict[str, str] | None = None) -> CodePage:
    """Pick the best page a printer profile offers (its ESC t number → name map)."""
    if available is None:
        return CodePage(*CODEPAGE_PREFERENCE[0])
    offered = {name.lower().replace("_", "-"): int(num) for num, name in available.items()}
    for codec, default_number in CODEPAGE_PREFERENCE:
        if codec in offered:
            return CodePage(codec, offered[codec])
    # A profile that lists none of them still has CP437 as page 0 on every ESC/POS printer.
    return CodePage("cp437", 0)


def stamp_card(filled: int, size: int, page: CodePage) -> str:
    """Draw a stamp card such as `█████░░░░░ 5/10`, or `#####..... 5/10` on a page without blocks."""
    filled = max(0, min(filled, size))
    full, empty = ("\u2588", "\u2591") if page.can_encode("\u2588\u2591") else ("#", ".")
    return f"{full * filled}{empty * (size - filled)} {filled}/{size}"


def two_columns(left: str, right: str, width: int) -> str:
    """Left text and right-aligned text on one line of `width` columns, left cut to fit."""
    room = width - len(right) - 1
    if room < 1:
        return f"{left[:width]}\n{right.rjust(width)}"
    return f"{left[:room].ljust(room)} {right}"
