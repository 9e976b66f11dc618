"""Rupiah formatting, code pages, URL registries and the error split."""

from __future__ import annotations

import pytest

from tillstamp.drivers.camera import open_camera
from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable, UnknownSchemeError
from tillstamp.drivers.printer import open_printer
from tillstamp.drivers.scanner import open_scanner
from tillstamp.drivers.text import CodePage, choose_codepage, format_rupiah, stamp_card


@pytest.mark.parametrize(("amount", "text"), [
    (25000, "Rp 25.000"), (0, "Rp 0"), (999, "Rp 999"), (1000, "Rp 1.000"),
    (1234567, "Rp 1.234.567"), (-5000, "-Rp 5.000"),
])
def test_format_rupiah(amount: int, text: str) -> None:
    assert format_rupiah(amount) == text


def test_format_rupiah_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_rupiah(25000.0)  # type: ignore[arg-type]


def test_cp858_prints_accents_and_transliterates_the_rest() -> None:
    page = choose_codepage()
    assert page == CodePage("cp858", 19)
    assert page.encode("José Señor").decode("cp858") == "José Señor"
    assert page.encode("“Kopi” – Łódź").decode("cp858") == '"Kopi" - Lódz'
    assert page.encode("€5").decode("cp858") == "€5"  # the reason for 858 over 850


def test_codepage_from_a_profile_without_cp858() -> None:
    page = choose_codepage({"0": "CP437", "16": "CP1252"})
    assert page == CodePage("cp1252", 16)
    assert stamp_card(3, 5, page) == "###.. 3/5"  # CP1252 has no block glyphs


def test_stamp_card_glyphs_on_cp858() -> None:
    assert stamp_card(5, 10, choose_codepage()) == "█████░░░░░ 5/10"
    assert stamp_card(12, 10, choose_codepage()).endswith("10/10")


@pytest.mark.parametrize("opener", [open_camera, open_printer])
def test_unknown_scheme_lists_known_ones(opener) -> None:
    with pytest.raises(UnknownSchemeError) as info:
        opener("ftp://example/x")
    assert "ftp" in str(info.value)
    assert len(info.value.known) >= 3
    assert all(s in str(info.value) for s in info.value.known)


def test_unknown_scanner_scheme_is_config_error() -> None:
    with pytest.raises(DeviceConfigError, match="known schemes: .*loop.*serial.*stdin"):
        open_scanner("gopher://x")


@pytest.mark.parametrize("url", [
    "escpos+tcp://", "escpos+usb://zz:01", "escpos+serial://", "file://",
    "escpos+tcp://127.0.0.1:9100?timeout=soon", "camera://front", "video:///no/such.mp4",
    "images:///no/such/dir", "serial:///dev/ttyUSB0?baudrate=fast",
])
def test_bad_urls_are_config_errors(url: str) -> None:
    opener = open_scanner if url.startswith("serial") else (
        open_camera if url.split(":")[0] in {"camera", "video", "images"} else open_printer)
    with pytest.raises(DeviceConfigError):
        opener(url)


def test_missing_devices_are_unavailable_not_config(tmp_path) -> None:
    with pytest.raises(DeviceUnavailable):
        open_scanner(str(tmp_path / "ttyUSB9"))
    with pytest.raises(DeviceUnavailable):
        open_printer(f"file://{tmp_path}/no/dir/out.bin")
    with pytest.raises(DeviceUnavailable):
        open_camera("camera://97")
