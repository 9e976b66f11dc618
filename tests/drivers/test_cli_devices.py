"""The device CLI commands, run through a local argparse main until the lead wires them in."""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import cv2
import pytest

from tillstamp.cli.devices import register
from tillstamp.drivers.escpos_decode import decode

from .conftest import DATA, FakePrinter, qr_image
from .photos import make_photo


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tillstamp")
    register(parser.add_subparsers(dest="command", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return args.func(args)


def test_every_command_has_help() -> None:
    parser = argparse.ArgumentParser(prog="tillstamp")
    sub = parser.add_subparsers(dest="command")
    print_sub = register(sub)
    assert {"decode", "scan", "print"} <= set(sub.choices)
    assert {"preview", "test"} <= set(print_sub.choices)  # the lead adds "reprint" here
    helps = {a.dest: a.help for a in sub._choices_actions}
    helps.update({a.dest: a.help for a in print_sub._choices_actions})
    assert all(helps.get(name) for name in ("decode", "scan", "print", "preview", "test"))


def test_decode_prints_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "member.png"
    cv2.imwrite(str(img), qr_image("TS1CLI"))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_photo("TS1PHONEPHOTO", seed=3))
    assert main(["decode", str(img), str(photo), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["file"] == str(img) and rows[0]["texts"] == ["TS1CLI"]
    assert rows[1]["texts"] == ["TS1PHONEPHOTO"] and rows[1]["ms"] >= 0


def test_decode_missing_file_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "/no/such.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such image" in err[0]


def test_preview_writes_png_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    shared_data: Path) -> None:
    out = tmp_path / "r.png"
    src = DATA / "escpos/escpos-tools__receipt-with-logo.bin"
    assert main(["print", "preview", str(src), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "Total            $ 14.25" in doc["lines"] and doc["qr"] == []
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_print_test_to_file_and_tcp(tmp_path: Path, fake_printer: FakePrinter,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.bin"
    assert main(["print", "test", f"file://{out}", "--width", "32"]) == 0
    assert "Café Señor" in decode(out.read_bytes()).text
    assert main(["print", "test", fake_printer.url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["online"] is True and report["paper"] == "ok"
    assert decode(fake_printer.take()).qr == ["TS1TESTRECEIPT"]


def test_print_test_bad_url_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["print", "test", "lpt://1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "known schemes" in err[0]


def test_scan_listen_on_a_pty(capsys: pytest.CaptureFixture[str]) -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)

    def type_codes() -> None:
        time.sleep(0.5)  # after the port is open: opening flushes its input
        os.write(master, b"TS1ONE\r\nTS1TWO\r\n")

    threading.Thread(target=type_codes, daemon=True).start()
    assert main(["scan", "listen", path, "--json", "--suffix", "CRLF", "--count", "2",
                 "--timeout", "10"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"payload": "TS1ONE", "source": path}, {"payload": "TS1TWO", "source": path}]
    os.close(master)
    os.close(slave)


def test_scan_listen_bad_url_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "listen", "gopher://x", "--timeout", "1"]) == 2
    assert "known schemes" in capsys.readouterr().err
