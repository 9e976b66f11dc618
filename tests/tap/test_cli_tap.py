"""`tillstamp tap parse` and `tillstamp tap run`, and the `[tap]` section of tillstamp.toml."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import EXAMPLE_PROGRAM

from tillstamp.agent.config import load_config
from tillstamp.agent.till import init_till, open_till
from tillstamp.cli import main
from tillstamp.tap import TapConfigError, service_record, start_tap, tap_config

from .conftest import DATA, SAMPLE, free_port, struk


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_parse_sample_prints_total_1425(capsys, shared_data):
    code, out, _ = run(capsys, "tap", "parse", str(SAMPLE), "--json")
    d = json.loads(out)
    assert code == 0 and d["total"] == 1425 and d["template"] == "escpos-tools-sample"
    assert d["receipt"].startswith("P-") and d["at"] == "2015-04-06T14:56:25+00:00" and len(d["lines"]) == 4


def test_parse_with_named_template_and_indonesian_job(tmp_path, capsys):
    job = tmp_path / "job.bin"
    job.write_bytes(struk())
    code, out, _ = run(capsys, "tap", "parse", str(job), "--template", "struk-id", "--json")
    assert code == 0 and json.loads(out)["receipt"] == "INV-2611-0042" and json.loads(out)["total"] == 68000


@pytest.mark.parametrize("argv,why", [
    (["tap", "parse", str(SAMPLE.parent / "escpos-php__demo.bin")], "no template read a receipt"),
    (["tap", "parse", "/nonexistent.bin"], "No such file"),
    (["tap", "parse", str(SAMPLE), "--template", "struk-id"], "no template read"),
    (["tap", "parse", str(SAMPLE), "--template", "nope"], "no template 'nope'"),
])
def test_parse_bad_input_exits_2_with_one_line(capsys, argv, why, request):
    if any(str(DATA) in a for a in argv):
        request.getfixturevalue("shared_data")  # skips (or fails under CI) without the corpus
    code, out, err = run(capsys, *argv)
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1 and out == ""


def test_parse_garbage_template_file_exits_2(tmp_path, capsys, shared_data):
    bad = tmp_path / "bad.toml"
    bad.write_text("[template]\nname='x'\n[fields]\ntotal='(oops'\n")
    code, _, err = run(capsys, "tap", "parse", str(SAMPLE), "--template", str(bad))
    assert code == 2 and "bad regular expression" in err


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "till"
    init_till(data, store="JKT-01", terminal="T1", program=EXAMPLE_PROGRAM)
    return data


def test_tap_run_prints_one_json_line_per_job(data_dir, tmp_path):
    out_file = tmp_path / "printed.bin"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tillstamp", "tap", "run", "--listen", f"tcp://127.0.0.1:{port}",
         "--printer", f"file://{out_file}", "--data", str(data_dir), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import socket

        deadline = time.monotonic() + 20
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        with s:
            s.sendall(struk())
        line = json.loads(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(struk())
        again = json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0
    assert line["parsed"] and line["inserted"] and line["receipt"] == "INV-2611-0042" and not line["duplicate"]
    assert again["duplicate"] and line["total"] == 68000
    with open_till(data_dir) as till:
        assert len(till.store.sales_by_receipt("INV-2611-0042")) == 1


def test_tap_run_bad_listen_exits_2(data_dir, capsys):
    code, _, err = run(capsys, "tap", "run", "--listen", "udp://x:1", "--printer", "dummy://",
                       "--data", str(data_dir))
    assert code == 2 and "listen" in err


def test_tap_section_starts_the_tap_for_the_agent(data_dir, printer):
    cfg_file = data_dir / "tillstamp.toml"
    # `init` may already write a [tap] table (listen empty: off); replace it with ours.
    text = re.sub(r"(?ms)^\[tap\]\n.*?(?=^\[|\Z)", "", cfg_file.read_text())
    cfg_file.write_text(text + f'\n[tap]\nlisten = "tcp://127.0.0.1:0"\n'
                        f'printer = "{printer.url}"\ntemplate = "struk-id"\nmember_window_s = 60\n')
    cfg = load_config(data_dir)
    jobs: list[dict] = []
    with open_till(data_dir) as till:
        server = start_tap(cfg, service_record(till.service), on_job=jobs.append)
        assert server is not None
        try:
            assert server.config.member_window_s == 60 and server.config.templates[0].name == "struk-id"
            from .conftest import pos_print, wait_jobs

            pos_print(server, struk())
            assert wait_jobs(jobs, 1)[0]["inserted"]
        finally:
            server.stop()


def test_no_tap_section_means_no_tap(data_dir):
    assert start_tap(load_config(data_dir), lambda d: d) is None


@pytest.mark.parametrize("section,why", [
    ({"listen": "tcp://127.0.0.1:9100"}, "printer"),
    ({"listen": "tcp://127.0.0.1:9100", "printer": "dummy://", "offline": "drop"}, "offline"),
    ({"listen": "tcp://127.0.0.1:9100", "printer": "dummy://", "template": "nope"}, "no template"),
    ({"listen": "ftp://x", "printer": "dummy://"}, "listen"),
    ({"listen": "tcp://h:1", "printer": "dummy://", "member_window_s": "soon"}, "member_window_s"),
])
def test_bad_tap_section_is_a_config_error(tmp_path, section, why):
    with pytest.raises(TapConfigError, match=why):
        tap_config(section, tmp_path)
