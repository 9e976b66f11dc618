"""What reaches the printer: no control bytes from a name, receipt number or line name, and
the member's own card QR only when it is asked for."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.kit import make_till, running_agent, sale
from tillstamp.agent.receipts import build_receipt
from tillstamp.agent.service import Refused
from tillstamp.agent.till import open_till
from tillstamp.cli import main
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.receipt import render_receipt
from tillstamp.drivers.text import choose_codepage, printable
from tillstamp.loyalty import tokens
from tillstamp.loyalty.sale import SaleError, parse_sale

DRAWER_KICK = b"\x1bp\x00\x19\xfa"  # ESC p 0: open the cash drawer
CUT = b"\x1dV\x00"  # GS V 0: full cut


def _hostile_receipt(tmp_path: Path) -> tuple[bytes, str, str]:
    """Input checks refuse control bytes (see test_input_refuses_control_bytes); printing strips
    them anyway, so a name that reached the till some other way (an old ledger, a member row
    from head office) still cannot drive the printer."""
    with open_till(make_till(tmp_path / "till")) as till:
        svc = till.service
        m = svc.enroll("0812-1111-2222", "Rina Wijaya")
        r = svc.record_sale(parse_sale(sale("R1", member=m.id), now=svc.now()))
        receipt = build_receipt(svc, r.key, store_name="Kopi\x1bp\x00Senja", result=r)
        line = dataclasses.replace(receipt.lines[0], name="Es Kopi\x1dV\x00\r\x07Susu")
        receipt = dataclasses.replace(receipt, member_name="Rina\x1bp\x00\x19\xfaWijaya\x1dV\x00",
                                      receipt_no="R\x1bp\x00\x19\xfa1", lines=(line, *receipt.lines[1:]))
        return render_receipt(receipt), m.id, svc.member_card(m.id)


def test_input_refuses_control_bytes(tmp_path: Path) -> None:
    with open_till(make_till(tmp_path / "till")) as till:
        svc = till.service
        with pytest.raises(Refused):
            svc.enroll("0812-1111-2222", "Rina\x1bp\x00\x19\xfaWijaya")
        data = sale("R\x1bp1")
        with pytest.raises((Refused, SaleError)):
            svc.record_sale(parse_sale(data, now=svc.now()))
        assert till.store.events() == []


def test_control_bytes_in_names_never_reach_the_printer(tmp_path: Path) -> None:
    raw, _, _ = _hostile_receipt(tmp_path)
    assert DRAWER_KICK not in raw and b"\x1bp" not in raw
    assert raw.count(b"\x1dV") == 1  # only the receipt's own cut, at its end
    assert b"\x07" not in raw and b"\r" not in raw
    doc = decode(raw)
    text = " ".join(doc.text)
    assert "Member: RinapúWijayaV" in text  # the letters stay, the control bytes are gone
    assert "Es KopiVSusu" in text and "No Rpú1" in text
    assert len(doc.cuts) == 1


def _card_member(till: Any, payload: str) -> str:
    """Whose card a QR is (a card signed a second later is the same card, issued anew)."""
    return tokens.verify_member(payload, till.keys.member_keys, till.service.now()).member


def test_a_member_receipt_does_not_carry_the_member_card(tmp_path: Path) -> None:
    with open_till(make_till(tmp_path / "till")) as till:
        svc = till.service
        m = svc.enroll("0812-1111-2222", "Rina")
        r = svc.record_sale(parse_sale(sale("R1", member=m.id), now=svc.now()))
        doc = decode(render_receipt(build_receipt(svc, r.key, store_name="Kopi Senja", result=r)))
        assert doc.qr == [] and "Member: Rina" in " ".join(doc.text)
        asked = decode(render_receipt(build_receipt(svc, r.key, store_name="Kopi Senja", with_card=True)))
        assert [_card_member(till, q) for q in asked.qr] == [m.id]


def test_member_card_print_prints_the_card_slip(tmp_path: Path, capsys) -> None:
    data = make_till(tmp_path / "till")
    out_file = tmp_path / "card.bin"
    assert main(["member", "enroll", "--phone", "0812-1111-2222", "--name", "Rina", "--data", str(data),
                 "--json"]) == 0
    member = json.loads(capsys.readouterr().out)["member"]
    code = main(["member", "card", member, "--print", "--printer", f"file://{out_file}", "--data",
                 str(data), "--json"])
    payload = json.loads(capsys.readouterr().out)["payload"]
    assert code == 0
    doc = decode(out_file.read_bytes())
    assert doc.qr == [payload] and "Rina" in " ".join(doc.text)
    assert main(["member", "card", member, "--data", str(data)]) == 2  # neither --out nor --print


def test_printable_keeps_letters_and_drops_every_control() -> None:
    assert printable("José\u00a0Ñ ●") == "José\u00a0Ñ ●"
    assert printable("a\x00b\x1bc\x1dd\x7fe\x85f\u200bg\u202eh") == "abcdefgh"
    page = choose_codepage()
    assert page.encode("A\x1bp\x00B") == b"ApB"


def test_enrolment_prints_the_card_only_when_asked(tmp_path: Path) -> None:
    data = make_till(tmp_path / "till")
    with running_agent(data) as agent:
        plain = agent.client.enroll("0812-1111-2222", "Rina")
        assert "card_job" not in plain or plain["card_job"] is None
        r = requests.post(agent.url + "/v1/members", json={"phone": "0813-3333-4444", "name": "Sari",
                                                           "print_card": True}, timeout=10)
        asked = r.json()
        assert r.status_code == 201 and asked["card_job"].startswith("card-")
        agent.client.record_sale(sale("R1", member=plain["member"]))  # a member receipt: no card
        assert agent.rt.flush_prints(10)
        doc = decode((data / "receipts.bin").read_bytes())
        # Sari's card slip; neither Rina's card nor any other QR
        assert [_card_member(agent.rt.till, q) for q in doc.qr] == [asked["member"]]
    assert "Sari" in " ".join(doc.text)


def test_member_enroll_print_card(tmp_path: Path, capsys) -> None:
    data = make_till(tmp_path / "till")
    out_file = tmp_path / "card.bin"
    assert main(["member", "enroll", "--phone", "0812-1111-2222", "--name", "Rina", "--print-card",
                 "--printer", f"file://{out_file}", "--data", str(data), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["card"]
    assert decode(out_file.read_bytes()).qr == [card]
