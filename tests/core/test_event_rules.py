"""One set of event rules at both ends: what head office would refuse, the till refuses at its
input with a clear reason, and writes nothing (issue 10, "sync can be stopped by one field")."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import sale_dict

from tillstamp.agent.service import Refused, Service
from tillstamp.loyalty import events as ev
from tillstamp.loyalty import rules
from tillstamp.loyalty.events import Event
from tillstamp.loyalty.sale import SaleError, parse_sale
from tillstamp.sync.wire import decode_event, decode_lines, head_json


def record(service: Service, d: dict):
    return service.record_sale(parse_sale(d, now=service.now()))


@pytest.mark.parametrize(("change", "message"), [
    ({"receipt": "R\x001"}, "receipt: control character U\\+0000"),
    ({"receipt": "R\x1b1"}, "receipt: control character U\\+001B"),
    ({"lines": [{"sku": "A\x00", "qty": 1, "price": 1000}], "total": 1000}, r"lines\[0\].sku: control"),
    ({"lines": [{"sku": "A", "name": "Kopi\x9b", "qty": 1, "price": 1000}], "total": 1000}, r"U\+009B"),
    ({"lines": [{"sku": "A", "category": "x\x7f", "qty": 1, "price": 1000}], "total": 1000}, "category"),
    ({"lines": [{"sku": "A", "qty": 100_001, "price": 1}], "total": 100_001}, "qty"),
    ({"memebr": "081234567890"}, "unknown field 'memebr'"),
    ({"lines": [{"sku": "A", "qty": 1, "price": 1000, "prise": 1}], "total": 1000}, r"lines\[0\]: unknown field"),
    ({"at": "2026-11-23T09:30:00+07:00"}, "in the future"),
])
def test_input_the_hq_would_refuse_is_refused_at_the_till_and_nothing_is_written(
        service: Service, change: dict, message: str) -> None:
    with pytest.raises(SaleError, match=message):
        record(service, {**sale_dict("R1"), **change})
    assert service.store.count_events() == 0


def test_a_sale_a_few_minutes_ahead_of_the_till_clock_is_taken(service: Service) -> None:
    assert not record(service, sale_dict("R1", at="2026-11-23T09:09:00+07:00")).duplicate


def test_a_sale_earning_more_stamps_than_a_sale_may_is_refused(service: Service) -> None:
    # 2 stamps per unit of coffee beans: 100,000 units would earn 200,000 stamps in one sale.
    m = service.enroll("081234567890")
    n = service.store.count_events()
    big = sale_dict("R1", member=m.id, lines=[{"sku": "GAYO", "category": "biji-kopi", "qty": 100_000, "price": 1}])
    with pytest.raises(Refused) as e:
        record(service, big)
    assert e.value.reason == "too_many_stamps" and "100,000" in str(e.value)
    assert service.store.count_events() == n


def test_a_member_name_with_control_characters_is_refused(service: Service) -> None:
    for name in ("Ani\x00", "Ani\x1b[2J", "Ani\u0085"):
        with pytest.raises(Refused) as e:
            service.enroll("081234567890", name=name)
        assert e.value.reason == "invalid_name" and "control character" in str(e.value)
    with pytest.raises(Refused) as e:
        service.enroll("081234567890", email="a\x00@b.id")
    assert e.value.reason == "invalid_email"
    assert service.store.count_events() == 0 and service.store.count_members() == 0


def test_the_store_itself_never_commits_an_event_the_rules_refuse(service: Service) -> None:
    bad = Event("E1", ev.ADJUSTED, service.now(), "M1", 5, "x\x00y", {})
    with pytest.raises(rules.RuleError, match="ref: control character"), service.store.write():
        service.store.append([bad], terminal="T1", store="JKT-01")
    assert service.store.count_events() == 0
    huge = Event("E2", ev.ADJUSTED, service.now(), "M1", 2_000_000, None, {})
    with pytest.raises(rules.RuleError, match="stamps"), service.store.write():
        service.store.append([huge], terminal="T1", store="JKT-01")
    assert service.store.count_events() == 0


def test_a_sale_sent_again_without_at_is_a_duplicate(service: Service, clock) -> None:
    first = record(service, sale_dict("R1", at=None))
    clock.advance(seconds=40)  # the retry comes a little later: "now" has moved on
    again = record(service, sale_dict("R1", at=None))
    assert again.duplicate and again.stamps_awarded == 0 and again.seq == first.seq


def test_a_different_sale_under_a_used_receipt_number_is_refused(service: Service) -> None:
    record(service, sale_dict("R1"))
    n = service.store.count_events()
    with pytest.raises(Refused) as e:
        record(service, sale_dict("R1", lines=[{"sku": "TEH", "qty": 1, "price": 8000}]))
    assert e.value.reason == "receipt_reused"
    assert service.store.count_events() == n


def _line(**change: object) -> str:
    w = Event("E1", ev.SALE, dt.datetime(2026, 3, 2, 3, tzinfo=dt.UTC), None, 0, "S/R1",
              {"receipt": "R1", "lines": [{"sku": "A", "qty": 1, "price": 1}], "total": 1}
              ).with_position(seq=1, terminal="T", store="S").to_wire()
    body = change.pop("body", w["body"])
    w.update(change)
    from tillstamp.loyalty.events import canonical

    return head_json(*(w[k] for k in ("id", "terminal", "store", "seq", "kind", "member", "at", "stamps", "ref"))) \
        + "\x1f" + canonical(body).decode()


@pytest.mark.parametrize(("change", "message"), [
    ({"ref": "S/R\x001"}, "ref: control character U+0000"),
    ({"ref": "S/R\x1b1"}, "ref: control character U+001B"),
    ({"member": "M\x85"}, "member: control character U+0085"),
    ({"stamps": 1_000_001}, "stamps"),
    ({"body": {"receipt": "R\x001", "lines": [], "total": 1}}, "body.receipt"),
    ({"body": {"receipt": "R1", "lines": [{"sku": "A", "qty": 10**6, "price": 1}], "total": 1}}, "qty"),
    ({"body": {"receipt": "R1", "lines": [{"sku": "A", "qty": 1, "price": 10**14}], "total": 1}}, "price"),
    ({"body": {"receipt": "R1", "lines": [], "total": -1}}, "total"),
])
def test_hq_applies_the_same_rules_to_each_event(change: dict, message: str) -> None:
    [ok] = decode_lines([_line()])
    assert ok.problem is None
    [got] = decode_lines([_line(**change)])
    assert got.problem is not None and message in got.problem and got.seq == 1
    w = Event("E1", ev.SALE, dt.datetime(2026, 3, 2, 3, tzinfo=dt.UTC), None, 0, "S/R1", {}
              ).with_position(seq=1, terminal="T", store="S").to_wire()
    as_json = decode_event({**w, **change})
    assert as_json.problem is not None and message in as_json.problem


def test_the_cli_refuses_a_reused_receipt_and_a_nul_with_exit_2(tmp_path, monkeypatch, capsys) -> None:
    import json

    from tillstamp.cli import main

    monkeypatch.setenv("TILLSTAMP_HOME", str(tmp_path / "till"))
    assert main(["init", "--store", "JKT-01", "--terminal", "T1"]) == 0
    first = tmp_path / "first.json"
    first.write_text(json.dumps(sale_dict("R1", at="2026-11-20T09:00:00+07:00")))
    assert main(["sale", "record", str(first)]) == 0
    capsys.readouterr()
    other = tmp_path / "other.json"
    other.write_text(json.dumps(sale_dict("R1", at="2026-11-20T09:00:00+07:00",
                                          lines=[{"sku": "TEH", "qty": 1, "price": 8000}])) + "\n"
                     + json.dumps(sale_dict("R\x002", at="2026-11-20T09:00:00+07:00")) + "\n")
    assert main(["sale", "record", str(other), "--json"]) == 2
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["error"] for o in out] == ["receipt_reused", "invalid_sale"]


_values = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**14), st.text(max_size=70),
                    st.text(st.sampled_from("ab\x00\x1b\x7f\x85 é"), max_size=5))


@settings(suppress_health_check=[HealthCheck.too_slow])  # generation is cheap; a loaded machine is not
@given(st.dictionaries(st.sampled_from(["sku", "name", "category", "qty", "price", "eligible"]), _values))
def test_the_fast_line_check_agrees_with_the_field_by_field_rules(line: dict) -> None:
    assert (rules.line_problem(line) is None) == (rules.line_fields_problem(line) is None)
