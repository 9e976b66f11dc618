"""Render a decoded ESC/POS Document to a PNG of the paper, so a receipt can be seen."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import qrcode
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from tillstamp.drivers.escpos_decode import Barcode, Cut, Document, Image, QrCode, TextLine

CELL_W, CELL_H = 12, 24  # Font A on Epson-class printers: 12 x 24 dots
PAPER_DOTS = {32: 384, 42: 512, 48: 576}
_FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
               "/usr/share/fonts/dejavu/DejaVuSansMono.ttf",
               "/System/Library/Fonts/Menlo.ttc")
_MARGIN = 16


def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in _FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, 19)
    return ImageFont.load_default(19)


def _text_tile(line: TextLine, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> PILImage.Image:
    tile = PILImage.new("L", (max(1, len(line.text)) * CELL_W, CELL_H), 255)
    draw = ImageDraw.Draw(tile)
    for i, ch in enumerate(line.text):
        # One glyph per cell keeps columns aligned even with a proportional fallback font.
        draw.text((i * CELL_W, 1), ch, font=font, fill=0)
        if line.bold:
            draw.text((i * CELL_W + 1, 1), ch, font=font, fill=0)
    if line.underline:
        draw.line((0, CELL_H - 2, tile.width, CELL_H - 2), fill=0, width=2)
    w, h = line.size
    if (w, h) != (1, 1):
        tile = tile.resize((tile.width * w, CELL_H * h), PILImage.Resampling.NEAREST)
    return tile


def _bitmap(img: Image) -> PILImage.Image:
    row = (img.width + 7) // 8
    packed = bytes(img.bits[: row * img.height]).ljust(row * img.height, b"\x00")
    # Mode "1" with raw packed bits is 1 = white; ESC/POS is 1 = black, so invert.
    bw = PILImage.frombytes("1", (row * 8, img.height), packed, "raw", "1;I")
    return bw.crop((0, 0, img.width, img.height)).convert("L")


def _qr_tile(code: QrCode) -> PILImage.Image:
    qr = qrcode.QRCode(border=4, box_size=max(2, code.module),
                       error_correction=qrcode.constants.ERROR_CORRECT_M)
    qr.add_data(code.payload)
    qr.make(fit=True)
    return qr.make_image().get_image().convert("L")


def _barcode_tile(code: Barcode, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> PILImage.Image:
    # A stand-in: bars are not drawn; the kind and data stay readable for a person.
    label = f"|||| {code.kind}: {code.data} ||||"
    return _text_tile(TextLine(label), font)


def _cut_tile(width: int) -> PILImage.Image:
    tile = PILImage.new("L", (width, CELL_H), 255)
    draw = ImageDraw.Draw(tile)
    for x in range(0, width, 12):
        draw.line((x, CELL_H // 2, x + 6, CELL_H // 2), fill=0, width=2)
    return tile


def render_png(document: Document, out: str | Path | BinaryIO, *, columns: int = 48) -> None:
    """Draw `document` on a paper strip (576 dots for 48 columns) and save it as PNG."""
    font = _font()
    paper = max([PAPER_DOTS.get(columns, columns * CELL_W)]
                + [b.width for b in document.blocks if isinstance(b, Image)])
    tiles: list[tuple[PILImage.Image, str]] = []
    for block in document.blocks:
        if isinstance(block, TextLine):
            tiles.append((_text_tile(block, font), block.align))
            if block.feed:
                tiles.append((PILImage.new("L", (1, CELL_H * block.feed), 255), "left"))
        elif isinstance(block, Image):
            tiles.append((_bitmap(block), block.align))
        elif isinstance(block, QrCode):
            tiles.append((_qr_tile(block), block.align))
        elif isinstance(block, Barcode):
            tiles.append((_barcode_tile(block, font), block.align))
        elif isinstance(block, Cut):
            tiles.append((_cut_tile(paper), "left"))
    paper = max([paper] + [t.width for t, _ in tiles])
    height = sum(t.height for t, _ in tiles) + 2 * _MARGIN
    page = PILImage.new("L", (paper + 2 * _MARGIN, max(height, 2 * _MARGIN + CELL_H)), 255)
    y = _MARGIN
    for tile, align in tiles:
        free = paper - tile.width
        x = _MARGIN + {"center": free // 2, "right": free}.get(align, 0)
        page.paste(tile, (x, y))
        y += tile.height
    page.save(out, format="PNG")
