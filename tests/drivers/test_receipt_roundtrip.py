"""Rendered receipts read back: the decoder sees the words, zxing-cpp reads the PNG's QR."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import datetime

import pytest
import zxingcpp
from PIL import Image

from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.preview import render_png
from tillstamp.drivers.receipt import Receipt, render_receipt


def _png_qr(receipt_bytes: bytes, columns: int) -> list[str]:
    buf = io.BytesIO()
    render_png(decode(receipt_bytes), buf, columns=columns)
    buf.seek(0)
    return [b.text for b in zxingcpp.read_barcodes(Image.open(buf))]


@pytest.mark.parametrize("width", [32, 48])
@pytest.mark.parametrize("native", [True, False])
def test_receipt_reads_back(receipt: Receipt, width: int, native: bool) -> None:
    data = render_receipt(receipt, width=width, native_qr=native)
    doc = decode(data)
    text = "\n".join(doc.text)
    for words in ("Café Señor", "José Santoso", "Kopi Susu Gula Aren", "2 x Rp 12.500",
                  "Rp 25.000", "Rp 43.000", "Selamat! Kamu dapat 3 stempel", "█████░░░░░ 5/10",
                  "Silver", "4 stempel lagi ke Gold", "Beli 5 kopi", "3/5",
                  "2 stempel pada 01/04/2025", "Scan untuk klaim 3 stempel", "14/03/2025 09:30"):
        assert words in text, words
    assert all(len(line.text) * line.size[0] <= width for line in doc.lines)
    assert len(doc.cuts) == 1 and doc.cuts[0].offset < len(data)
    if native:
        assert doc.qr == ["TS1MEMBER7QXZ2K"] and not doc.images
    else:
        assert doc.qr == [] and len(doc.images) == 1
    assert "TS1MEMBER7QXZ2K" in _png_qr(data, width)


def test_store_name_is_big_and_bold_and_total_is_bold(receipt: Receipt) -> None:
    lines = decode(render_receipt(receipt)).lines
    head = lines[0]
    assert (head.text, head.bold, head.size, head.align) == ("Café Señor", True, (1, 2), "center")
    total = next(line for line in lines if line.text.startswith("TOTAL"))
    assert total.bold and total.text.endswith("Rp 43.000")


def test_english_receipt(receipt: Receipt) -> None:
    text = decode(render_receipt(replace(receipt, language="en"))).text
    assert "Congrats! You earned 3 stamps" in text
    assert any("4 more stamps to Gold" in t for t in text)


def test_minimal_receipt_without_member_or_qr(receipt: Receipt) -> None:
    bare = Receipt(store_name="Warung", receipt_no="9", at=receipt.at, lines=receipt.lines,
                   total=43000)
    doc = decode(render_receipt(bare))
    assert doc.qr == [] and not any("stempel" in t for t in doc.text)
    assert "Terima kasih!" in doc.text


def test_receipt_requires_aware_time(receipt: Receipt) -> None:
    with pytest.raises(ValueError, match="aware"):
        replace(receipt, at=datetime(2025, 1, 1))


def test_native_qr_is_much_smaller_than_image(receipt: Receipt) -> None:
    native = render_receipt(receipt, width=48)
    image = render_receipt(receipt, width=48, native_qr=False)
    assert len(image) > 3 * len(native)
