"""One output rule for every command, checked over the whole command tree, and the CLI items a
new user meets first: local times in the ledger, Rupiah, rewards for a member, the card image,
head office's terminals and program, and head office being down."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from support import EXAMPLE_PROGRAM, sale_dict

from tillstamp.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
            ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


def _filled(parser: argparse.ArgumentParser) -> list[str]:
    """The smallest argv that satisfies a command's required arguments."""
    argv: list[str] = []
    for a in parser._actions:
        value = str(a.choices[0]) if a.choices else ("1" if a.type in (int, float) else "X")
        if not a.option_strings and a.nargs != "?":
            argv.append(value)
        elif a.required:
            argv += [a.option_strings[0], value]
    return argv


LEAVES = list(_leaves(build_parser()))


def test_the_tree_is_walked() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"sale record", "decode", "scan listen", "print preview", "print test", "sync pull",
            "hq terminal list", "hq program show"} <= names and len(names) >= 30


@pytest.mark.parametrize(("path", "leaf"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_takes_json_before_or_after_its_name(path, leaf) -> None:
    parser = build_parser()
    rest = _filled(leaf)
    after = parser.parse_args([*path, *rest, "--json"])
    before = parser.parse_args(["--json", *path, *rest])
    plain = parser.parse_args([*path, *rest])
    assert after.json is True and before.json is True, path  # never overwritten by a default
    assert getattr(plain, "json", False) is False, path
    assert leaf.description or any(a.help for a in leaf._actions), path


@pytest.fixture
def till(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "till"
    monkeypatch.setenv("TILLSTAMP_HOME", str(d))
    assert main(["init", "--store", "JKT-01", "--terminal", "T1", "--store-name", "Kopi Senja"]) == 0
    return d


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _no_json(text: str) -> bool:
    return not any(line.lstrip().startswith(("{", "[")) for line in text.splitlines())


def test_without_json_stdout_has_no_json_and_errors_go_to_stderr(till, capsys, tmp_path) -> None:
    capsys.readouterr()
    stream = tmp_path / "mixed.jsonl"
    stream.write_text(json.dumps(sale_dict("R-1")) + "\n{oops\n")
    code, out, err = run(capsys, "sale", "record", str(stream))
    assert code == 2 and _no_json(out) and out.startswith("R-1: no member; claim QR for 3 stamps")
    assert "line 2: not valid JSON" in err
    code, out, err = run(capsys, "--json", "sale", "record", str(stream))  # --json before the name
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 2 and lines[0]["duplicate"] is True and lines[1]["error"] == "invalid_json"


def test_print_preview_json_before_the_command_is_obeyed(till, capsys, tmp_path) -> None:
    from tillstamp.agent.receipts import build_receipt
    from tillstamp.agent.till import open_till
    from tillstamp.drivers.receipt import render_receipt
    from tillstamp.loyalty.sale import parse_sale

    with open_till(till) as t:
        r = t.service.record_sale(parse_sale(sale_dict("R-1"), now=t.service.now()))
        (tmp_path / "r.bin").write_bytes(render_receipt(build_receipt(t.service, r.key, store_name="K")))
    code, out, _ = run(capsys, "--json", "print", "preview", str(tmp_path / "r.bin"), "--out",
                       str(tmp_path / "r.png"))
    assert code == 0 and json.loads(out)["qr"] == [r.claim]
    code, out, _ = run(capsys, "print", "preview", str(tmp_path / "r.bin"), "--out", str(tmp_path / "r.png"))
    assert code == 0 and out.startswith("wrote ") and _no_json(out)


def test_scan_listen_stdin_ends_at_end_of_input() -> None:
    # The issue's own command: it spun on "lost/opening" forever at the end of the pipe.
    done = subprocess.run([sys.executable, "-m", "tillstamp", "scan", "listen", "stdin://"],
                          input=b"081234567890\r", capture_output=True, timeout=30, check=False)
    assert done.returncode == 0 and done.stdout.decode().split() == ["081234567890"]
    assert done.stderr.decode().count("opening") == 1


def test_ledger_show_local_time_and_filters(till, capsys) -> None:
    main(["member", "enroll", "--phone", "081234567890", "--name", "Budi"])
    capsys.readouterr()
    stream = "\n".join(json.dumps(sale_dict(r, member="081234567890" if r == "R-1" else None))
                       for r in ("R-1", "R-2"))
    (till / "s.jsonl").write_text(stream)
    main(["sale", "record", str(till / "s.jsonl")])
    capsys.readouterr()
    code, out, _ = run(capsys, "ledger", "show")
    assert code == 0 and all(re.search(r"T\d\d:\d\d:\d\d\+07:00 ", line) for line in out.splitlines())
    assert " 09:00:00+07:00 sale.recorded" in out.replace("T", " ")  # the store's wall clock
    code, out, _ = run(capsys, "ledger", "show", "--receipt", "R-2", "--json")
    assert [json.loads(x)["ref"] for x in out.splitlines()] == ["JKT-01/R-2"]
    code, out, _ = run(capsys, "ledger", "show", "--member", "0812-3456-7890", "--json")
    kinds = [json.loads(x)["kind"] for x in out.splitlines()]
    assert kinds[0] == "member.enrolled" and "sale.recorded" in kinds and len(kinds) >= 3
    code, _, err = run(capsys, "ledger", "show", "--receipt", "R-NOPE")
    assert code == 2 and "no such sale" in err


def test_member_show_money_and_reward_list_for_a_member(till, capsys, tmp_path) -> None:
    main(["member", "enroll", "--phone", "081234567890", "--name", "Budi"])
    (tmp_path / "s.json").write_text(json.dumps(sale_dict("R-1", member="081234567890", lines=[
        {"sku": "KOPI", "name": "Kopi", "category": "coffee", "qty": 8, "price": 25000}])))
    main(["sale", "record", str(tmp_path / "s.json")])
    capsys.readouterr()
    code, out, _ = run(capsys, "member", "show", "--phone", "081234567890")
    assert code == 0 and "Rp 200.000 / Rp 500.000" in out and "0/500000" not in out
    code, out, _ = run(capsys, "reward", "list", "--member", "081234567890")
    assert code == 0 and out.splitlines()[0] == "Budi: 6 stamps, tier bronze"
    assert out.splitlines()[1] == "can redeem now: pastry-gratis"
    assert re.search(r"kopi-gratis\s+10 stamps .*\(4 more\)", out)
    _, out, _ = run(capsys, "reward", "list", "--member", "081234567890", "--json")
    d = json.loads(out)
    assert d["balance"] == 6 and [r["id"] for r in d["rewards"] if r["can_redeem"]] == ["pastry-gratis"]


def test_member_card_has_the_qr_and_words_under_it(till, capsys, tmp_path) -> None:
    _, out, _ = run(capsys, "member", "enroll", "--phone", "081234567890", "--name", "Budi", "--json")
    member = json.loads(out)["member"]
    _, out, _ = run(capsys, "member", "card", member, "--out", str(tmp_path / "card.png"), "--json")
    payload = json.loads(out)["payload"]
    img = Image.open(tmp_path / "card.png")
    assert [b.text for b in zxingcpp.read_barcodes(img)] == [payload]
    # Three lines of text (shop, name, id) below a square QR.
    assert img.height > img.width + 60
    gray = img.convert("L")
    qr_bottom = img.width  # the QR is at most as tall as the card is wide
    below = gray.crop((0, qr_bottom, img.width, img.height))
    assert below.getextrema()[0] < 100  # ink under the code


# -- head office --------------------------------------------------------------------------


def test_program_set_twice_is_one_version_and_show(tmp_path, capsys) -> None:
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    code, out, _ = run(capsys, "hq", "program", "set", str(EXAMPLE_PROGRAM), "--db", db, "--json")
    assert code == 0 and json.loads(out)["version"] == 1
    code, out, _ = run(capsys, "hq", "program", "set", str(EXAMPLE_PROGRAM), "--db", db, "--json")
    assert json.loads(out)["version"] == 1  # the same file again: no new version for every till
    changed = tmp_path / "p.toml"
    changed.write_text(EXAMPLE_PROGRAM.read_text().replace("cost = 6", "cost = 7"))
    code, out, _ = run(capsys, "hq", "program", "set", str(changed), "--db", db, "--json")
    assert json.loads(out)["version"] == 2
    code, out, _ = run(capsys, "hq", "program", "show", "--db", db)
    assert out.startswith("program version 2: Kartu Stempel Kopi Senja") and "pastry-gratis (7)" in out


def test_terminal_list_and_remove(tmp_path, capsys) -> None:
    from sync.live import serve

    from tillstamp.hq.app import create_app
    from tillstamp.hq.service import Hq
    from tillstamp.hq.store import open_hq_store

    db = f"sqlite:///{tmp_path / 'hq.db'}"
    code, out, _ = run(capsys, "hq", "terminal", "add", "--db", db, "--store", "JKT-01",
                       "--store-name", "Kopi Senja Sudirman", "--json")
    code_ = json.loads(out)["code"]
    hq = Hq(open_hq_store(db))
    try:
        with serve(create_app(hq)) as url:
            code, out, _ = run(capsys, "init", "--hq", url, "--code", code_, "--data",
                               str(tmp_path / "till"), "--json")
            enrolled = json.loads(out)
    finally:
        hq.store.close()
    # The till prints the shop's name head office knows, not its store id.
    assert enrolled["store_name"] == "Kopi Senja Sudirman"
    assert 'store_name = "Kopi Senja Sudirman"' in (tmp_path / "till" / "tillstamp.toml").read_text()
    code, out, _ = run(capsys, "hq", "terminal", "list", "--db", db)
    assert out.startswith(enrolled["terminal"]) and "store JKT-01" in out
    code, out, _ = run(capsys, "hq", "terminal", "remove", enrolled["terminal"], "--db", db)
    assert code == 0 and "can no longer sync" in out
    code, out, _ = run(capsys, "hq", "terminal", "list", "--db", db, "--json")
    assert json.loads(out) == []
    code, _, err = run(capsys, "hq", "terminal", "remove", enrolled["terminal"], "--db", db)
    assert code == 2 and "not enrolled" in err


def test_sync_push_with_head_office_down_says_so(tmp_path, capsys) -> None:
    from sync.live import serve

    from tillstamp.hq.app import create_app
    from tillstamp.hq.service import Hq
    from tillstamp.hq.store import open_hq_store

    db = f"sqlite:///{tmp_path / 'hq.db'}"
    _, out, _ = run(capsys, "hq", "terminal", "add", "--db", db, "--store", "JKT-01", "--json")
    code_ = json.loads(out)["code"]
    data = tmp_path / "till"
    hq = Hq(open_hq_store(db))
    try:
        with serve(create_app(hq)) as url:
            assert main(["init", "--hq", url, "--code", code_, "--data", str(data)]) == 0
    finally:
        hq.store.close()
    # Head office is gone now; the till goes on and has events to send.
    main(["member", "enroll", "--phone", "081234567890", "--data", str(data)])
    capsys.readouterr()
    code, out, err = run(capsys, "sync", "push", "--data", str(data), "--attempts", "1", "--timeout", "2")
    assert code == 1 and out == ""
    assert err.startswith(f"tillstamp: head office not reached at {url}")
    assert "nothing pushed; " in err and "events wait for the next push" in err
    code, out, err = run(capsys, "sync", "push", "--data", str(data), "--attempts", "1", "--timeout", "2",
                         "--json")
    assert code == 1 and json.loads(out)["reached"] is False and "not reached" in err


def test_hq_serve_logs_its_address_and_requests(tmp_path) -> None:
    import threading

    import requests
    from agent.kit import free_port, wait_for

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tillstamp", "hq", "serve", "--db",
                             f"sqlite:///{tmp_path / 'hq.db'}", "--port", str(port)],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: lines, timeout=30, what="the first log line")
        assert lines[0].startswith(f"tillstamp hq serving sqlite:///{tmp_path / 'hq.db'} on "
                                   f"http://127.0.0.1:{port}/")

        def docs() -> bool:
            try:
                return requests.get(f"http://127.0.0.1:{port}/docs", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(docs, timeout=30, what="hq serve to answer")
        wait_for(lambda: any("GET /docs" in line for line in lines), timeout=10, what="a request line")
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.stdout.read() == ""  # logs on stderr; stdout stays for results
