"""The CLI as a shopkeeper uses it: commands, JSON output, exit codes, nothing written on errors."""

from __future__ import annotations

import gc
import json
import re
import sqlite3
import subprocess
import sys

import pytest
from support import ROOT, sale_dict

from tillstamp.cli import build_parser, main


@pytest.fixture
def data(tmp_path, monkeypatch):
    d = tmp_path / "till"
    monkeypatch.setenv("TILLSTAMP_HOME", str(d))
    assert main(["init", "--store", "JKT-01", "--terminal", "T1", "--store-name", "Kopi Senja"]) == 0
    return d


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def count_events(data) -> int:
    conn = sqlite3.connect(data / "till.db")
    try:
        return conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
    finally:
        conn.close()


def test_init_writes_a_commented_config_and_keys(data):
    text = (data / "tillstamp.toml").read_text()
    assert 'store = "JKT-01"' in text and "# " in text and "[devices]" in text
    assert (data / "keys" / "terminal.pem").stat().st_mode & 0o777 == 0o600
    assert main(["init", "--store", "JKT-01", "--terminal", "T1"]) == 2  # already initialised


def test_enrol_show_sale_refund_redeem_claim(data, capsys, tmp_path):
    code, out, _ = run(capsys, "member", "enroll", "--phone", "0812-3456-7890", "--name", "Budi",
                       "--consent", "whatsapp,email", "--json")
    assert code == 0
    member = json.loads(out)["member"]
    code, out, _ = run(capsys, "member", "show", "--phone", "+62 812 3456 7890", "--json")
    shown = json.loads(out)
    assert (shown["member"], shown["name"], shown["balance"], shown["tier"]) == (member, "Budi", 0, "bronze")

    sales = tmp_path / "sales.jsonl"
    sales.write_text("\n".join(json.dumps(sale_dict(f"R-{i}", member="6281234567890")) for i in range(4)))
    code, out, _ = run(capsys, "sale", "record", str(sales), "--json")
    results = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["stamps_awarded"] for r in results] == [3, 3, 3 + 2, 3]
    assert all(set(r) >= {"receipt", "member", "stamps_awarded", "balance", "duplicate"} for r in results)

    code, out, _ = run(capsys, "sale", "refund", "R-0", "--line", "KOPI-SUSU:1", "--json")
    assert code == 0 and json.loads(out)["stamps"] == -2
    code, out, _ = run(capsys, "reward", "redeem", "kopi-gratis", "--member", member, "--json")
    assert code == 0 and json.loads(out)["balance"] == 14 - 2 - 10

    one = tmp_path / "one.json"
    one.write_text(json.dumps(sale_dict("R-ANON"), indent=2))
    code, out, _ = run(capsys, "sale", "record", str(one), "--json")
    claim = json.loads(out)["claim"]
    assert code == 0 and claim.startswith("HTTPS://")
    code, out, _ = run(capsys, "claim", claim, "--member", member, "--json")
    assert code == 0 and json.loads(out)["stamps"] == 3
    code, _, err = run(capsys, "claim", claim, "--member", member)
    assert code == 2 and "already claimed" in err

    code, out, _ = run(capsys, "ledger", "verify", "--json")
    assert code == 0 and json.loads(out)["ok"]
    code, out, _ = run(capsys, "member", "card", member, "--out", str(tmp_path / "card.png"), "--json")
    payload = json.loads(out)["payload"]
    code, out, _ = run(capsys, "member", "show", "--qr", payload, "--json")
    assert json.loads(out)["member"] == member


def test_json_lines_with_bad_lines_go_on_and_exit_2(data, capsys, tmp_path):
    good = json.dumps(sale_dict("R-1"))
    bad_total = json.dumps({**sale_dict("R-2"), "total": 1})
    stream = tmp_path / "mixed.jsonl"
    stream.write_text("\n".join([good, "{not json", bad_total, json.dumps(sale_dict("R-3")), ""]))
    code, out, err = run(capsys, "sale", "record", "--json", str(stream))
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 2
    assert [x.get("receipt") for x in lines] == ["R-1", None, "R-2", "R-3"]
    assert lines[1]["error"] == "invalid_json" and lines[2]["error"] == "invalid_sale"
    assert "line 2" in err and "line 3" in err
    assert count_events(data) == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["member", "enroll", "--phone", "12"],
        ["member", "show", "--phone", "0812-0000-0000"],
        ["member", "show"],
        ["sale", "refund", "R-NOPE"],
        ["sale", "refund", "R-1", "--line", "KOPI"],
        ["reward", "redeem", "mobil", "--member", "081234567890"],
        ["claim", "TS1CGARBAGE", "--member", "081234567890"],
        ["claim", "HTTPS://X/TS1C" + "A" * 60, "--member", "081234567890"],
        ["sale", "record", "/no/such/file.json"],
        ["member", "enroll"],
        ["frobnicate"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(data, capsys, argv):
    main(["member", "enroll", "--phone", "081234567890"])
    capsys.readouterr()
    before = count_events(data)
    with pytest.raises(SystemExit) if argv in (["member", "enroll"], ["frobnicate"]) else _nothing() as ex:
        code = main(argv)
    code = ex.value.code if ex else code
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("tillstamp")
    assert count_events(data) == before


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def test_not_initialised_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TILLSTAMP_HOME", str(tmp_path / "empty"))
    code, _, err = run(capsys, "member", "show", "--phone", "081234567890")
    assert code == 2 and "tillstamp init" in err


def _commands(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield prefix + (name,), helps.get(name) or sub.description
                yield from _commands(sub, prefix + (name,))


def test_every_command_has_help_and_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = list(_commands(build_parser()))
    assert len(commands) > 15
    for words, help_text in commands:
        assert help_text, f"{' '.join(words)} has no help"
        pattern = r"tillstamp\s+" + r"\s+".join(map(re.escape, words)) + r"\b"
        assert re.search(pattern, readme), f"`tillstamp {' '.join(words)}` is not in README.md"


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "tillstamp", "--help"], capture_output=True, text=True, check=True)
    assert "tillstamp" in out.stdout and "sale" in out.stdout


def test_building_the_command_tree_imports_no_library_code():
    """`tillstamp --help` stays quick: command groups import their library code only when run."""
    import subprocess
    import sys

    code = ("import sys, tillstamp.cli as c; c.build_parser(); "
            "print('\\n'.join(sorted(sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True).stdout.split())
    heavy = {"sqlite_utils", "numpy", "fastapi", "requests", "cryptography", "tillstamp.hq.service",
             "tillstamp.agent.store", "tillstamp.tap.server", "tillstamp.pos_plugin.server"}
    assert not heavy & loaded


class _Recorder:
    """A stdout that keeps each write and each flush, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def write(self, text: str) -> int:
        self.calls.append(("write", text, gc.get_freeze_count()))
        return len(text)

    def flush(self) -> None:
        self.calls.append(("flush", "", gc.get_freeze_count()))


def test_each_answer_is_one_whole_line_flushed_and_the_collector_is_given_back(data, tmp_path, monkeypatch):
    # A POS reads an answer per sale: one write of the whole line, then a flush (one system call
    # on a pipe), while start-up's objects are kept out of the collector's walks; afterwards a
    # program that called main() in its own process has its collector as before.
    stream = tmp_path / "two.jsonl"
    stream.write_text(json.dumps(sale_dict("R-1")) + "\n{oops\n" + json.dumps(sale_dict("R-2")) + "\n")
    out = _Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    assert gc.get_freeze_count() == 0
    assert main(["sale", "record", "--json", str(stream)]) == 2
    assert [kind for kind, _, _ in out.calls] == ["write", "flush"] * 3
    lines = [text for kind, text, _ in out.calls if kind == "write"]
    assert all(text.endswith("\n") and text.count("\n") == 1 for text in lines)
    assert [json.loads(text).get("receipt") for text in lines] == ["R-1", None, "R-2"]
    assert all(frozen > 0 for _, _, frozen in out.calls)
    assert gc.get_freeze_count() == 0
