"""The hand-written decoder on other projects' streams, and fuzzed so it never raises or hangs."""

from __future__ import annotations

import io

import pytest
import zxingcpp
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.preview import render_png

from .conftest import DATA

ESCPOS = DATA / "escpos"
# Collected by name so a missing corpus gives one skip with its reason, not an empty set.
STREAMS = sorted(p.name for p in ESCPOS.glob("*.bin")) or ["<shared corpus absent>"]


def test_receipt_with_logo_matches_esc2text(shared_data) -> None:
    doc = decode((ESCPOS / "escpos-tools__receipt-with-logo.bin").read_bytes())
    expected = (ESCPOS / "escpos-tools__receipt-with-logo.esc2text_expected.txt").read_text()
    want = [line.rstrip() for line in expected.rstrip("\n").split("\n")]
    assert [line.rstrip() for line in doc.text] == want
    assert doc.lines[0].size == (2, 1) and doc.lines[0].align == "center"
    assert any(line.bold and line.text.startswith("Subtotal") for line in doc.lines)
    assert [(i.width, i.height) for i in doc.images] == [(300, 236)]
    assert len(doc.cuts) == 1 and len(doc.pulses) == 1


def test_cut_offsets_point_at_the_cut_command(shared_data) -> None:
    data = (ESCPOS / "escpos-tools__receipt-with-logo.bin").read_bytes()
    cut = decode(data).cuts[0]
    assert data[cut.offset : cut.offset + 2] == b"\x1dV"
    # The print tap inserts before the cut: the inserted text must come out before the cut.
    tapped = data[: cut.offset] + b"Stempel: 3\n" + data[cut.offset :]
    doc = decode(tapped)
    assert doc.text[-1] == "Stempel: 3"
    assert doc.blocks.index(doc.lines[-1]) < doc.blocks.index(doc.cuts[0])


def test_qr_code_stream(shared_data) -> None:
    doc = decode((ESCPOS / "escpos-php__qr-code.bin").read_bytes())
    assert doc.qr[0] == "Testing 123"
    assert "0123456789012345678901234567890123456789" in doc.qr
    assert "QR code demo" in doc.text and doc.lines[0].size == (2, 2)


def test_barcodes_and_pdf417(shared_data) -> None:
    kinds = {b.kind for b in decode((ESCPOS / "escpos-php__barcode.bin").read_bytes()).barcodes}
    assert {"UPC-A", "EAN13", "CODE39", "CODE128", "ITF", "CODABAR"} <= kinds
    pdf = decode((ESCPOS / "escpos-php__pdf417-code.bin").read_bytes()).barcodes
    assert pdf and all(b.kind == "PDF417" and b.data == "Testing 123" for b in pdf)


def test_code_pages_selected_by_esc_t(shared_data) -> None:
    text = decode((ESCPOS / "escpos-php__character-encodings.bin").read_bytes()).text
    assert "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg." in text
    assert "В чащах юга жил бы цитрус? Да, но фальшивый экземпляр!" in text
    tables = decode((ESCPOS / "escpos-php__character-tables.bin").read_bytes()).text
    assert "E ÓßÔÒõÕµþÞÚÛÙýÝ¯´\xad±‗¾¶§÷¸°¨·¹³²■ " in tables  # CP850, after ESC t 2


def test_images_raster_column_and_graphics(shared_data) -> None:
    raster = decode((ESCPOS / "escpos-php__bit-image.bin").read_bytes()).images
    graphics = decode((ESCPOS / "escpos-php__graphics.bin").read_bytes()).images
    assert len(raster) == 4 and {i.kind for i in raster} == {"raster"}
    assert len(graphics) == 4 and {i.kind for i in graphics} == {"graphics"}
    tux = graphics[0]
    assert sum(tux.pixel(x, y) for x in range(tux.width) for y in range(tux.height)) > 1000


def test_column_image_bands_merge() -> None:
    band = b"\x1b*\x21\x04\x00" + b"\xff\x00\x00" * 4  # 24-dot band, 4 columns
    doc = decode(b"\x1b@" + band + b"\n" + band + b"\nafter\n")
    assert [(i.kind, i.width, i.height) for i in doc.images] == [("column", 4, 48)]
    assert doc.text == ["after"]  # the LFs ending each band are not text lines
    img = doc.images[0]
    assert img.pixel(0, 0) and not img.pixel(0, 8)


def test_size_and_alignment_commands() -> None:
    doc = decode(b"\x1d!\x11big\n\x1d!\x00\x1ba\x02right\n\x1b!\x08bold\n\x1bE\x00x\n")
    assert [(line.text, line.size, line.align, line.bold) for line in doc.lines] == [
        ("big", (2, 2), "left", False), ("right", (1, 1), "right", False),
        ("bold", (1, 1), "right", True), ("x", (1, 1), "right", False)]


@pytest.mark.parametrize("path", STREAMS, ids=str)
def test_every_shared_stream_decodes_and_renders(shared_data, path) -> None:
    data = (ESCPOS / path).read_bytes()
    doc = decode(data)
    assert doc.lines and doc.cuts and not doc.truncated
    buf = io.BytesIO()
    render_png(doc, buf)
    assert Image.open(buf).height > 100


def test_rendered_native_qr_decodes_from_png(shared_data) -> None:
    doc = decode((ESCPOS / "escpos-php__demo.bin").read_bytes())
    buf = io.BytesIO()
    render_png(doc, buf)
    buf.seek(0)
    assert "Testing 123" in [b.text for b in zxingcpp.read_barcodes(Image.open(buf))]


@pytest.mark.parametrize("path", STREAMS, ids=str)
def test_every_truncation_point_is_safe(shared_data, path) -> None:
    data = (ESCPOS / path).read_bytes()[:3000]
    for end in range(0, len(data), 7):
        decode(data[:end])


_COMMANDS = st.sampled_from([b"\x1b", b"\x1d", b"\x10", b"\x1c", b"\x1d(k", b"\x1d(L",
                             b"\x1dv0", b"\x1b*", b"\x1dk", b"\x1dV", b"\x1bt", b"\n", b"\x00",
                             b"\xff\xff", b"\x1d8L", b"\x1bD"])


@settings(max_examples=400, deadline=200)
@given(st.lists(st.one_of(_COMMANDS, st.binary(max_size=12)), max_size=40))
def test_fuzz_never_raises_or_hangs(chunks: list[bytes]) -> None:
    data = b"".join(chunks)
    doc = decode(data)
    assert all(0 <= c.offset < len(data) for c in doc.cuts)


@settings(max_examples=200, deadline=200)
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data: bytes) -> None:
    decode(data)
