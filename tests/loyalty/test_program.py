"""Program files: the example loads, and each kind of mistake is refused by its key path."""

from __future__ import annotations

import tomllib
from fractions import Fraction

import pytest
from support import EXAMPLE_PROGRAM

from tillstamp.loyalty.program import ProgramError, load_program, parse_program


def raw() -> dict:
    return tomllib.loads(EXAMPLE_PROGRAM.read_text())


def test_example_program_loads_every_part(program):
    assert program.card.size == 10 and program.card.reward == "kopi-gratis"
    assert program.spend.every == 25000 and program.spend.cap == 5
    assert [t.id for t in program.tiers] == ["bronze", "silver", "gold"]
    assert program.tiers[1].multiplier == Fraction(5, 4)
    assert {m.kind for m in program.missions} == {"visits_in_week", "distinct_skus", "spend_target", "checkin_streak"}
    assert program.expiry.months == 12
    assert program.bonuses[1].multiplier == Fraction(3, 2)
    assert program.reward("tumbler").tiers == frozenset({"silver", "gold"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("card"), "card: missing table"),
        (lambda r: r["card"].update(size=0), "card.size: must be at least 1"),
        (lambda r: r["card"].update(reward="nope"), "card.reward: 'nope' is not in the rewards catalogue"),
        (lambda r: r["earn"]["spend"].update(every="lots"), "earn.spend.every: expected a whole number"),
        (lambda r: r["earn"]["bonus"][0].update(days=["funday"]), "earn.bonus[0].days: 'fun'"),
        (lambda r: r["earn"]["bonus"][0].update(multiplier=0.5), "earn.bonus[0].multiplier: must be at least 1"),
        (lambda r: r["earn"]["bonus"][0].update({"from": "25:99"}), "earn.bonus[0].from"),
        (lambda r: r["earn"]["items"][0].update(category="x"), "give exactly one of sku or category"),
        (lambda r: r["rewards"][2].update(tiers=["platinum"]), "rewards[2].tiers: unknown tier 'platinum'"),
        (lambda r: r["rewards"][1].update(cost=-1), "rewards[1].cost: must be at least 1"),
        (lambda r: r["missions"][0].update(kind="dance"), "missions[0].kind: 'dance' is not one of"),
        (lambda r: r["tiers"][0].update(threshold=5), "the lowest tier must have threshold 0"),
        (lambda r: r["program"].update(timezone="Mars/Olympus"), "unknown time zone"),
        (lambda r: r.update(earn={}), "no earning rule"),
        (lambda r: r["expiry"].update(months=-3), "expiry.months: must be at least 0"),
        (lambda r: r["rewards"].append(dict(r["rewards"][0])), "reward ids must be unique"),
    ],
)
def test_bad_programs_are_refused_with_the_key_path(mutate, message):
    data = raw()
    mutate(data)
    with pytest.raises(ProgramError) as err:
        parse_program(data)
    assert message in str(err.value)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "p.toml"
    bad.write_text("[program\nname=")
    with pytest.raises(ProgramError, match="not valid TOML"):
        load_program(bad)
    with pytest.raises(ProgramError, match="no such program file"):
        load_program(tmp_path / "missing.toml")


def test_default_tiers_when_none_given():
    data = raw()
    data.pop("tiers")
    data["rewards"] = [r for r in data["rewards"] if "tiers" not in r]
    p = parse_program(data)
    assert [t.name for t in p.tiers] == ["Bronze", "Silver", "Gold"]
