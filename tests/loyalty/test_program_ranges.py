"""Absurd program values are refused with their key path, by the parser, `init` and
`hq program set`, instead of crashing every sale on every till that pulls them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from support import EXAMPLE_PROGRAM

from tillstamp.cli import main
from tillstamp.loyalty.program import ProgramError, parse_program


def raw() -> dict:
    return tomllib.loads(EXAMPLE_PROGRAM.read_text())


ABSURD = [
    (lambda r: r["claim"].update(valid_days=999_999_999), "claim.valid_days: must be at most 3,650"),
    (lambda r: r["earn"]["bonus"][0].update(multiplier=1e308), "earn.bonus[0].multiplier: must be at most 10"),
    (lambda r: r["earn"]["bonus"][0].update(multiplier=float("inf")), "earn.bonus[0].multiplier: expected a finite"),
    (lambda r: r["earn"]["bonus"][0].update(multiplier=float("nan")), "earn.bonus[0].multiplier: expected a finite"),
    (lambda r: r["expiry"].update(months=99_999_999), "expiry.months: must be at most 120"),
    (lambda r: r["tiers"][1].update(multiplier=1e9), "tiers[1].multiplier: must be at most 10"),
    (lambda r: r["card"].update(size=10**9), "card.size: must be at most 1,000"),
    (lambda r: r["earn"]["items"][0].update(stamps=10**7), "earn.items[0].stamps: must be at most 1,000"),
    (lambda r: r["earn"]["spend"].update(cap=-1), "earn.spend.cap: must be at least 0"),
    (lambda r: r["rewards"][0].update(cost=10**9), "rewards[0].cost: must be at most 1,000,000"),
    (lambda r: r["offline"].update(max_offline_hours=10**9), "offline.max_offline_hours: must be at most"),
    (lambda r: r["tiering"].update(window_months=10**6), "tiering.window_months: must be at most 120"),
    (lambda r: r["missions"][0].update(target=10**15), "missions[0].target: must be at most"),
]


@pytest.mark.parametrize(("mutate", "message"), ABSURD)
def test_absurd_values_are_refused_with_the_key_path(mutate, message):
    r = raw()
    r.setdefault("claim", {})
    r.setdefault("offline", {})
    r.setdefault("tiering", {})
    mutate(r)
    with pytest.raises(ProgramError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_program(r)


def _absurd_file(tmp_path: Path) -> Path:
    text = EXAMPLE_PROGRAM.read_text(encoding="utf-8")
    assert "valid_days = 7\n" in text
    path = tmp_path / "absurd.toml"
    path.write_text(text.replace("valid_days = 7\n", "valid_days = 999999999\n"), encoding="utf-8")
    return path


def test_init_refuses_an_absurd_program_and_creates_nothing(tmp_path: Path, capsys):
    data = tmp_path / "till"
    code = main(["init", "--store", "S1", "--terminal", "T1", "--program", str(_absurd_file(tmp_path)),
                 "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2 and "claim.valid_days" in err and err.count("\n") == 1
    assert not data.exists()


def test_hq_program_set_refuses_an_absurd_program(tmp_path: Path, capsys):
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    code = main(["hq", "program", "set", str(_absurd_file(tmp_path)), "--db", db])
    err = capsys.readouterr().err
    assert code == 2 and "claim.valid_days" in err
    assert main(["hq", "program", "set", str(EXAMPLE_PROGRAM), "--db", db, "--json"]) == 0
    assert '"version": 1' in capsys.readouterr().out  # the refused one took no version number
