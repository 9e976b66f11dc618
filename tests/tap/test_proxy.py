"""The tap over real loopback sockets: pass-through, insertion, exactly once, status, offline."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from tillstamp.drivers.escpos_decode import decode
from tillstamp.tap import TapServer
from tillstamp.tap.template import parse_template

from .conftest import SAMPLE, PrinterSim, free_port, pos_print, struk, wait_jobs


def split_insert(sent: bytes, printed: bytes) -> tuple[int, bytes]:
    """Where one block was inserted into `sent` to give `printed`, and the block."""
    p = 0
    while p < min(len(sent), len(printed)) and sent[p] == printed[p]:
        p += 1
    rest = sent[p:]
    assert printed.endswith(rest), "bytes after the insertion point changed"
    return p, printed[p : len(printed) - len(rest)]


def test_receipt_gets_claim_block_before_its_cut_and_bytes_are_unchanged(printer, tap_factory):
    server, jobs = tap_factory(printer.url)
    data = struk()
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    printed = printer.wait_for(job["bytes_out"])
    at, block = split_insert(data, printed)
    assert at == decode(data).cuts[0].offset  # right before the cut
    assert job["parsed"] and job["inserted"] and job["receipt"] == "INV-2611-0042" and job["total"] == 68000
    assert decode(block).qr == [job["claim"]] and "klaim 3 stempel" in " ".join(decode(block).text)
    assert job["printed"] and job["kept"] is None and not job["duplicate"]


def test_reprint_awards_nothing_and_reprints_the_same_claim(printer, tap_factory, service):
    server, jobs = tap_factory(printer.url)
    pos_print(server, struk())
    wait_jobs(jobs, 1)  # two connections report in the order their sessions end
    pos_print(server, struk(reprint=True))
    first, again = wait_jobs(jobs, 2)
    assert not first["duplicate"] and again["duplicate"] and again["receipt"] == first["receipt"]
    assert again["claim"] == first["claim"]  # the same QR, claimable once
    assert len(service.store.sales_by_receipt("INV-2611-0042")) == 1


def test_receipt_without_number_is_recorded_once_by_content(printer, tap_factory, service):
    server, jobs = tap_factory(printer.url)
    for n in (1, 2):
        pos_print(server, struk(no=None))
        wait_jobs(jobs, n)  # two connections report in the order their sessions end
    first, again = jobs
    assert first["receipt"].startswith("P-") and not first["duplicate"] and again["duplicate"]


def test_member_scanned_at_the_till_gets_stamps_on_the_receipt(printer, tap_factory, service):
    row = service.enroll("081234567890", "Budi")
    used: list[str] = []
    server, jobs = tap_factory(printer.url, current_member=lambda: row.id, member_used=used.append)
    pos_print(server, struk())
    (job,) = wait_jobs(jobs, 1)
    assert job["member"] == row.id and job["stamps"] == 3 and job["inserted"] and job["claim"] is None
    text = decode(printer.wait_for(job["bytes_out"])).text
    assert "Selamat! Kamu dapat 3 stempel" in text and "Saldo stempel: 3" in text
    assert used == [row.id]


def test_escpos_tools_sample_passes_through_and_is_read(printer, tap_factory, shared_data):
    server, jobs = tap_factory(printer.url)
    data = SAMPLE.read_bytes()
    pos_print(server, data, chunk=500)
    (job,) = wait_jobs(jobs, 1)
    assert job["parsed"] and job["total"] == 1425 and job["template"] == "escpos-tools-sample"
    # Below the program's minimum spend: nothing to claim, so nothing inserted.
    assert not job["inserted"] and printer.wait_for(len(data)) == data


def test_unparseable_job_prints_unchanged_and_is_kept(printer, tap_factory, shared_data):
    server, jobs = tap_factory(printer.url)
    data = (SAMPLE.parent / "escpos-php__demo.bin").read_bytes()
    pos_print(server, data, chunk=4096)
    (job,) = wait_jobs(jobs, 1)
    assert printer.wait_for(len(data)) == data
    assert not job["parsed"] and not job["inserted"] and "not read" in job["error"]
    assert Path(job["kept"]).read_bytes() == data
    assert json.loads(Path(job["kept"]).with_suffix(".json").read_text())["job"] == job["job"]


def test_wrong_template_fails_open(printer, tap_factory):
    wrong = parse_template("[template]\nname='wrong'\n[fields]\ntotal='^JUMLAH (?P<amount>[\\d.]+)$'\n")
    server, jobs = tap_factory(printer.url, templates=(wrong,))
    data = struk()
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    assert printer.wait_for(len(data)) == data and not job["parsed"] and job["kept"]


def test_service_raising_fails_open(printer, tap_factory):
    def broken(sale):
        raise RuntimeError("database is locked")

    server, jobs = tap_factory(printer.url, record=broken)
    data = struk()
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    assert printer.wait_for(len(data)) == data
    assert "database is locked" in job["error"] and job["kept"] and not job["inserted"]


def test_slow_service_does_not_hold_the_receipt(printer, tap_factory):
    def slow(sale):
        time.sleep(1.0)  # a writer queue stuck behind something long
        return {}

    server, jobs = tap_factory(printer.url, record=slow, config={"record_timeout_s": 0.2})
    data = struk()
    t0 = time.monotonic()
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    assert time.monotonic() - t0 < 0.9 and "took over" in job["error"]
    assert printer.wait_for(len(data)) == data


def test_status_query_round_trip_while_a_job_streams(printer, tap_factory):
    server, jobs = tap_factory(printer.url)
    data = struk()
    half = len(data) // 2
    with socket.create_connection(server.address, timeout=2) as s:
        s.sendall(data[:half])
        s.sendall(b"\x10\x04\x01")  # DLE EOT 1 in the middle of the job, before any cut
        assert s.recv(1) == b"\x12"  # the printer's own answer, relayed at once
        s.sendall(b"\x1da\x01")  # enable automatic status back: 4 bytes come back
        got = b""
        while len(got) < 4:
            got += s.recv(4 - len(got))
        assert got == b"\x10\x00\x00\x00"
        s.sendall(data[half:])
        s.sendall(b"\x1dr\x01")  # GS r 1 after the cut
        assert s.recv(1) == b"\x00"
    (job,) = wait_jobs(jobs, 1)
    assert job["inserted"]
    sent = data[:half] + b"\x10\x04\x01\x1da\x01" + data[half:] + b"\x1dr\x01"
    _, block = split_insert(sent, printer.wait_for(len(sent) + 1))
    assert decode(block).qr == [job["claim"]]


def test_persistent_connection_splits_jobs_at_cut_then_idle(printer, tap_factory):
    server, jobs = tap_factory(printer.url)
    with socket.create_connection(server.address, timeout=2) as s:
        s.sendall(struk(no="A-1") + b"\x1bp\x00\x19\xfa")  # cut, then a drawer kick: same job
        wait_jobs(jobs, 1)
        assert len(jobs) == 1  # ended by silence after the cut, connection still open
        s.sendall(struk(no="A-2"))
        wait_jobs(jobs, 2)
    assert [j["receipt"] for j in jobs] == ["A-1", "A-2"]


def test_receipt_without_cut_gets_its_block_appended(printer, tap_factory):
    server, jobs = tap_factory(printer.url)
    data = struk(cut=False)
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    printed = printer.wait_for(job["bytes_out"])
    assert job["inserted"] and printed.startswith(data) and decode(printed[len(data):]).qr


def test_offline_printer_answers_offline_and_spools_the_job(tap_factory):
    port = free_port()
    server, jobs = tap_factory(f"escpos+tcp://127.0.0.1:{port}?timeout=0.3")
    data = struk()
    with socket.create_connection(server.address, timeout=2) as s:
        s.sendall(b"\x10\x04\x01")
        assert s.recv(1) == b"\x1a"  # bit 3: offline, as the printer itself would say
        s.sendall(data)
    (job,) = wait_jobs(jobs, 1)
    assert not job["printed"] and job["spooled"] and job["parsed"] and "offline" in job["error"]
    back = PrinterSim(port=port)  # the printer is switched on again
    try:
        printed = back.wait_for(len(data) + 100, timeout=10)
        body = printed.replace(b"\x10\x04\x01", b"").replace(b"\x10\x04\x04", b"")
        assert decode(body).qr == [job["claim"]] and body.startswith(data[:100])
    finally:
        back.close()


def test_offline_keep_mode_keeps_the_job_instead(tap_factory):
    server, jobs = tap_factory(f"escpos+tcp://127.0.0.1:{free_port()}?timeout=0.3", config={"offline": "keep"})
    data = struk()
    pos_print(server, data)
    (job,) = wait_jobs(jobs, 1)
    assert not job["printed"] and not job["spooled"] and Path(job["kept"]).read_bytes() == data


def test_file_printer_gets_status_answered_by_the_tap(tmp_path, tap_factory):
    out = tmp_path / "out.bin"
    server, jobs = tap_factory(f"file://{out}")
    data = struk()
    assert pos_print(server, b"\x10\x04\x01" + data, read_for=0.3) == b"\x12"
    (job,) = wait_jobs(jobs, 1)
    assert job["inserted"] and out.read_bytes().startswith(b"\x10\x04\x01" + data[:50])


def test_kept_jobs_are_bounded(printer, tmp_path, service):
    from tillstamp.tap.jobs import JobKeeper

    keeper = JobKeeper(tmp_path / "jobs", max_jobs=3, max_bytes=250)
    for i in range(5):
        keeper.keep(f"job-{i}", bytes(100), {"i": i})
    assert [p.stem for p in keeper.jobs()] == ["job-3", "job-4"]  # 2 x 100 <= 250 bytes


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pty")
def test_serial_listen_on_a_pty(printer, tap_factory):
    master, slave = os.openpty()
    try:
        server, jobs = tap_factory(printer.url, listen=f"serial://{os.ttyname(slave)}")
        assert isinstance(server, TapServer)
        data = struk()
        os.write(master, data)
        (job,) = wait_jobs(jobs, 1)
        assert job["inserted"] and job["receipt"] == "INV-2611-0042"
    finally:
        os.close(master)
        os.close(slave)
