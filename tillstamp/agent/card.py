"""A member's card as an image: the QR, and under it the shop, the member's name and id.

`tillstamp member card` writes it and the cashier panel shows it after an enrolment, so a card
printed or sent to a phone says whose it is and where it belongs, not just a bare code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import qrcode
from PIL import Image, ImageDraw, ImageFont

_FONT_PATHS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/dejavu/DejaVuSans.ttf",
               "/usr/share/fonts/TTF/DejaVuSans.ttf")


@dataclass(frozen=True)
class MemberCard:
    """What a member card shows: its signed QR payload and the words under it."""

    payload: str
    shop: str
    name: str
    member: str


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in _FONT_PATHS:
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default(size)  # Pillow's own scalable font: no system font needed


def card_image(card: MemberCard, *, box: int = 8) -> Image.Image:
    """The card as a white image: QR on top, then shop, name and member id, centred."""
    code = qrcode.QRCode(box_size=box, border=4, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(card.payload)
    code.make(fit=True)
    qr = code.make_image().get_image().convert("L")
    rows = [(card.shop, _font(26)), (card.name, _font(30)), (card.member, _font(18))]
    width = max(qr.width, 360, *(int(f.getlength(text)) + 40 for text, f in rows))
    heights = [f.getbbox(text or " ")[3] + 12 for text, f in rows]
    img = Image.new("L", (width, qr.height + sum(heights) + 24), 255)
    img.paste(qr, ((width - qr.width) // 2, 0))
    draw = ImageDraw.Draw(img)
    y = qr.height
    for (text, font), h in zip(rows, heights, strict=True):
        w = draw.textlength(text, font=font)
        draw.text(((width - w) / 2, y), text, fill=0, font=font)
        y += h
    return img


def card_png(card: MemberCard) -> bytes:
    """The card image as PNG bytes."""
    buf = io.BytesIO()
    card_image(card).save(buf, format="PNG")
    return buf.getvalue()
