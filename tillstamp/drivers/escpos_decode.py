"""A hand-written ESC/POS decoder: bytes become lines, images, codes, cuts and drawer kicks.

No Python library decodes ESC/POS (python-escpos only encodes; escpos-tools is PHP), and the
print tap needs byte offsets of cuts, so this is ours. Unknown commands are skipped by their
known length (or one byte); a truncated command ends the document. It never raises on input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from tillstamp.drivers.escpos_commands import Reader, skip_unknown
from tillstamp.drivers.text import ESC_T_TABLE

Align = str  # "left" | "center" | "right"
_CONTROL = re.compile(rb"[\x00-\x1f]")


@dataclass(frozen=True)
class TextLine:
    """One printed text line with the style of its first character."""

    text: str
    bold: bool = False
    size: tuple[int, int] = (1, 1)
    align: Align = "left"
    underline: bool = False
    offset: int = 0
    feed: int = 0


@dataclass
class Image:
    """A 1-bit image; `bits` rows are packed MSB first, 1 = black dot."""

    width: int
    height: int
    bits: bytes
    kind: str
    offset: int = 0
    align: Align = "left"

    def pixel(self, x: int, y: int) -> bool:
        """True when dot (x, y) is black."""
        row = (self.width + 7) // 8
        return bool(self.bits[y * row + x // 8] & (0x80 >> (x % 8)))


@dataclass(frozen=True)
class QrCode:
    """A QR code the stream stored (GS ( k fn 80) and then printed (fn 81)."""

    payload: str
    module: int = 3
    offset: int = 0
    align: Align = "left"


@dataclass(frozen=True)
class Barcode:
    """A 1D barcode (GS k) or PDF417 code; `data` as the printer receives it."""

    kind: str
    data: str
    offset: int = 0
    align: Align = "left"


@dataclass(frozen=True)
class Cut:
    """A paper cut; `offset` is where its command starts, so a tap can insert before it."""

    offset: int
    partial: bool = False


@dataclass(frozen=True)
class Pulse:
    """A cash drawer kick (ESC p or DLE DC4)."""

    offset: int
    pin: int = 0


Block = TextLine | Image | QrCode | Barcode | Cut | Pulse


@dataclass
class Document:
    """A decoded stream: `blocks` in paper order, with views by kind."""

    blocks: list[Block] = field(default_factory=list)
    unknown: int = 0
    truncated: bool = False

    @property
    def lines(self) -> list[TextLine]:
        """Text lines in order."""
        return [b for b in self.blocks if isinstance(b, TextLine)]

    @property
    def text(self) -> list[str]:
        """The text of each line."""
        return [b.text for b in self.lines]

    @property
    def qr(self) -> list[str]:
        """Payloads of the QR codes printed."""
        return [b.payload for b in self.blocks if isinstance(b, QrCode)]

    @property
    def images(self) -> list[Image]:
        """Raster, column and graphics images in order."""
        return [b for b in self.blocks if isinstance(b, Image)]

    @property
    def barcodes(self) -> list[Barcode]:
        """1D barcodes and PDF417 codes."""
        return [b for b in self.blocks if isinstance(b, Barcode)]

    @property
    def cuts(self) -> list[Cut]:
        """Cut commands with their byte offsets."""
        return [b for b in self.blocks if isinstance(b, Cut)]

    @property
    def pulses(self) -> list[Pulse]:
        """Cash drawer kicks."""
        return [b for b in self.blocks if isinstance(b, Pulse)]


@dataclass
class _Style:
    bold: bool = False
    width: int = 1
    height: int = 1
    underline: bool = False
    align: Align = "left"
    codec: str = "cp437"


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.r = Reader(data)
        self.doc = Document()
        self.style = _Style()
        self.chars: list[str] = []
        self.line_style: _Style | None = None
        self.line_offset = 0
        self.band_pending = False  # an ESC * band sits on the current line
        self.qr_store = b""
        self.qr_module = 3
        self.pdf_store = b""
        self.graphics: Image | None = None

    # -- text ---------------------------------------------------------------------------
    def put_text(self, raw: bytes, offset: int) -> None:
        if self.line_style is None:
            self.line_style = _Style(**vars(self.style))
            self.line_offset = offset
        self.chars.append(raw.decode(self.style.codec, errors="replace"))

    def end_line(self, feed: int = 0, force: bool = True) -> None:
        if not self.chars and not force:
            return
        if not self.chars and self.band_pending:
            self.band_pending = False  # the LF that ends a column-image band is not a text line
            return
        s = self.line_style or self.style
        self.doc.blocks.append(TextLine(
            text="".join(self.chars), bold=s.bold, size=(s.width, s.height), align=s.align,
            underline=s.underline, offset=self.line_offset, feed=feed))
        self.chars = []
        self.line_style = None
        self.band_pending = False

    def add(self, block: Block) -> None:
        self.end_line(force=False)
        if isinstance(block, (Image, QrCode, Barcode)):
            block = replace(block, align=self.style.align)
        self.doc.blocks.append(block)

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> Document:
        r = self.r
        while not r.at_end():
            start = r.pos
            b = r.byte()
            try:
                if b == 0x0A:
                    self.end_line()
                elif b == 0x1B:
                    self.esc(start)
                elif b == 0x1D:
                    self.gs(start)
                elif b == 0x10:
                    self.dle(start)
                elif b == 0x1C:
                    self.fs()
                elif b == 0x09:
                    width = sum(len(c) for c in self.chars)
                    self.put_text(b" " * (8 - width % 8), start)
                elif b == 0x0C:
                    self.end_line(force=False)
                elif b >= 0x20:
                    found = _CONTROL.search(r.data, r.pos)  # the end of this run of text
                    end = found.start() if found else len(r.data)
                    self.put_text(r.data[start:end], start)
                    r.pos = end
                # other C0 bytes (CR, NUL, CAN...) print nothing
            except EOFError:
                self.doc.truncated = True
                break
        self.end_line(force=False)
        return self.doc

    def esc(self, start: int) -> None:
        r, st = self.r, self.style
        c = r.byte()
        if c == 0x40:  # ESC @ initialise
            self.style = _Style()
        elif c == 0x21:  # ESC ! print mode
            n = r.byte()
            st.bold, st.underline = bool(n & 0x08), bool(n & 0x80)
            st.height, st.width = (2 if n & 0x10 else 1), (2 if n & 0x20 else 1)
        elif c == 0x45:  # ESC E bold
            st.bold = bool(r.byte() & 1)
        elif c == 0x2D:  # ESC - underline
            st.underline = bool(r.byte() & 3)
        elif c == 0x61:  # ESC a justification
            st.align = {0: "left", 1: "center", 2: "right"}.get(r.byte() % 48, "left")
        elif c == 0x74:  # ESC t code table
            st.codec = ESC_T_TABLE.get(r.byte(), "cp437")
        elif c == 0x64:  # ESC d print and feed n lines
            n = r.byte()
            self.end_line(feed=max(0, n - 1))
        elif c == 0x4A:  # ESC J print and feed n dots
            r.byte()
            self.end_line(force=False)
        elif c == 0x2A:  # ESC * column bit image
            self.column_image(start)
        elif c == 0x70:  # ESC p drawer kick
            pin = r.byte()
            r.take(2)
            self.add(Pulse(offset=start, pin=pin % 48))
        elif c in (0x69, 0x6D):  # ESC i / ESC m: legacy full/partial cut
            self.add(Cut(offset=start, partial=c == 0x6D))
        elif c == 0x44:  # ESC D tab positions, NUL terminated
            r.until(0)
        elif not skip_unknown(r, 0x1B, c):
            self.doc.unknown += 1

    def column_image(self, start: int) -> None:
        r = self.r
        m = r.byte()
        cols = r.u16()
        high = 24 if m in (32, 33) else 8
        data = r.take(cols * (high // 8))
        row = (cols + 7) // 8
        bits = bytearray(row * high)
        for x in range(cols):
            for y in range(high):
                if data[x * (high // 8) + y // 8] & (0x80 >> (y % 8)):
                    bits[y * row + x // 8] |= 0x80 >> (x % 8)
        st_align = self.style.align
        prev = self.doc.blocks[-1] if self.doc.blocks else None
        self.end_line(force=False)
        if isinstance(prev, Image) and prev.kind == "column" and prev.width == cols \
                and self.doc.blocks and self.doc.blocks[-1] is prev:
            prev.bits += bytes(bits)  # the next band of the same picture
            prev.height += high
        else:
            self.doc.blocks.append(Image(cols, high, bytes(bits), "column", start, st_align))
        self.band_pending = True

    def gs(self, start: int) -> None:
        r, st = self.r, self.style
        c = r.byte()
        if c == 0x21:  # GS ! character size
            n = r.byte()
            st.width, st.height = (n >> 4 & 7) + 1, (n & 7) + 1
        elif c == 0x56:  # GS V cut
            m = r.byte()
            if m in (65, 66, 97, 98, 103, 104):
                r.byte()
            self.add(Cut(offset=start, partial=m in (1, 49, 66, 98, 104)))
        elif c == 0x76:  # GS v 0 raster image
            r.byte()
            r.byte()
            row, height = r.u16(), r.u16()
            self.add(Image(row * 8, height, r.take(row * height), "raster", start))
        elif c == 0x6B:  # GS k barcode
            self.barcode(start)
        elif c == 0x28:  # GS ( X pL pH ...
            fn_class = r.byte()
            body = r.take(r.u16())
            if fn_class == 0x6B:
                self.code_2d(body, start)
            elif fn_class == 0x4C:
                self.graphics_cmd(body, start)
        elif c == 0x38:  # GS 8 L: graphics with a 4-byte length
            if r.byte() == 0x4C:
                self.graphics_cmd(r.take(r.u32()), start)
        elif not skip_unknown(r, 0x1D, c):
            self.doc.unknown += 1

    def barcode(self, start: int) -> None:
        r = self.r
        m = r.byte()
        if m <= 6:
            data = r.until(0)
        else:
            data = r.take(r.byte())
        kind = _BARCODES.get(m % 65 if m >= 65 else m, f"type{m}")
        self.add(Barcode(kind, data.decode("latin-1"), start))

    def code_2d(self, body: bytes, start: int) -> None:
        if len(body) < 2:
            return
        cn, fn, rest = body[0], body[1], body[2:]
        if cn == 49:  # QR
            if fn == 67 and rest:
                self.qr_module = rest[0]
            elif fn == 80:
                self.qr_store = rest[1:]
            elif fn == 81:
                self.add(QrCode(self.qr_store.decode("utf-8", errors="replace"),
                                self.qr_module, start))
        elif cn == 48:  # PDF417
            if fn == 80:
                self.pdf_store = rest[1:]
            elif fn == 81:
                self.add(Barcode("PDF417", self.pdf_store.decode("latin-1"), start))

    def graphics_cmd(self, body: bytes, start: int) -> None:
        if len(body) < 2:
            return
        fn = body[1]
        if fn in (0x70, 0x71) and len(body) >= 10:  # store raster / column graphics
            width = int.from_bytes(body[6:8], "little")
            height = int.from_bytes(body[8:10], "little")
            data = body[10:]
            row = (width + 7) // 8
            if fn == 0x70 and len(data) >= row * height:
                self.graphics = Image(width, height, bytes(data[: row * height]), "graphics", start)
        elif fn in (0x02, 0x32) and self.graphics is not None:  # print stored graphics
            self.add(self.graphics)
            self.graphics = None

    def dle(self, start: int) -> None:
        r = self.r
        c = r.byte()
        if c in (0x04, 0x05):  # DLE EOT / DLE ENQ status
            r.byte()
        elif c == 0x14:  # DLE DC4 fn ...
            fn = r.byte()
            if fn == 1:
                pin = r.byte()
                r.byte()
                self.add(Pulse(offset=start, pin=pin))
            else:
                r.take(2)

    def fs(self) -> None:
        if not skip_unknown(self.r, 0x1C, self.r.byte()):
            self.doc.unknown += 1


_BARCODES = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR",
             7: "CODE93", 8: "CODE128", 9: "GS1-128", 10: "GS1-DATABAR"}



def decode(data: bytes) -> Document:
    """Decode an ESC/POS byte stream into a Document; never raises on any input."""
    return _Decoder(bytes(data)).run()
