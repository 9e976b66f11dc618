"""Who may print through the tap: loopback by default, an allow-list of POS addresses for
anything else; a connection from elsewhere records nothing and prints nothing."""

from __future__ import annotations

import socket

import pytest

from tillstamp.tap.ports import parse_listen
from tillstamp.tap.server import TapConfig, TapConfigError, TapServer, tap_config

from .conftest import pos_print, struk, wait_jobs


def _print_from(server: TapServer, source: str, data: bytes) -> None:
    assert server.address is not None
    with socket.socket() as s:
        s.bind((source, 0))
        s.settimeout(5)
        s.connect(server.address)
        try:
            s.sendall(data)
            s.recv(1)  # the tap closes a refused connection: recv returns b"" (or resets)
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass


def test_a_pos_not_on_the_allow_list_records_and_prints_nothing(printer, tap_factory, service):
    server, jobs = tap_factory(printer.url, config={"allow": ("127.0.0.2",)})
    _print_from(server, "127.0.0.1", struk(no="INV-2611-0666"))
    assert server.refused == 1
    assert service.store.sales_by_receipt("INV-2611-0666") == []
    _print_from(server, "127.0.0.2", struk(no="INV-2611-0100"))
    (job,) = wait_jobs(jobs, 1)
    assert job["receipt"] == "INV-2611-0100" and job["printed"]
    assert len(service.store.sales_by_receipt("INV-2611-0100")) == 1
    assert server.refused == 1


def test_loopback_listen_needs_no_list(printer, tap_factory):
    server, jobs = tap_factory(printer.url)
    pos_print(server, struk())
    assert wait_jobs(jobs, 1)[0]["parsed"]


def test_listening_beyond_loopback_needs_an_allow_list(tmp_path, service):
    with pytest.raises(TapConfigError, match="allow"):
        tap_config({"listen": "tcp://0.0.0.0:9100", "printer": "dummy://"}, tmp_path)
    with pytest.raises(TapConfigError, match="not an IP"):
        tap_config({"listen": "tcp://0.0.0.0:9100", "printer": "dummy://", "allow": ["pos.lan"]}, tmp_path)
    cfg = tap_config({"listen": "tcp://0.0.0.0:9100", "printer": "dummy://",
                      "allow": ["192.168.1.0/24"]}, tmp_path)
    assert cfg.allow == ("192.168.1.0/24",)
    # The server checks again, for callers that build a TapConfig themselves (`tap run`).
    bare = TapConfig(listen="tcp://0.0.0.0:0", printer="dummy://", folder=tmp_path / "tap")
    with pytest.raises(TapConfigError, match="allow"):
        TapServer(bare, lambda d: None).start()


def test_a_listen_url_without_host_is_loopback():
    assert parse_listen("tcp://:9100") == ("tcp", "127.0.0.1", 9100)


def test_ipv4_mapped_peers_are_matched_as_ipv4(tmp_path):
    cfg = TapConfig(listen="tcp://127.0.0.1:0", printer="dummy://", folder=tmp_path / "tap",
                    allow=("192.168.1.0/24",))
    server = TapServer(cfg, lambda d: None)
    assert server.admits("::ffff:192.168.1.20") and server.admits("192.168.1.7")
    assert not server.admits("192.168.2.1") and not server.admits("127.0.0.1")


def test_tap_run_beyond_loopback_without_allow_exits_2(tmp_path, capsys):
    from support import EXAMPLE_PROGRAM

    from tillstamp.agent.till import init_till
    from tillstamp.cli import main

    data_dir = tmp_path / "till"
    init_till(data_dir, store="JKT-01", terminal="T1", program=EXAMPLE_PROGRAM)
    code = main(["tap", "run", "--listen", "tcp://0.0.0.0:0", "--printer", "dummy://",
                 "--data", str(data_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "allow" in err and err.count("\n") == 1
