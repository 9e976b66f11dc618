"""What the loyalty receipt says, read back from its printed bytes with the ESC/POS decoder:
a reprint is the original marked as a copy, discounts, news (missions, rewards ready), the
claim QR's where and until, no wasted paper before the cut, and a regular's receipt from their kept state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from agent.kit import make_till, sale
from tillstamp.agent.receipts import build_receipt, claim_host, local_date
from tillstamp.agent.till import Till, open_till
from tillstamp.drivers.escpos_decode import Cut, TextLine, decode
from tillstamp.drivers.receipt import Slip, render_receipt, render_slip
from tillstamp.loyalty.sale import parse_sale

COPY_ID = "*** SALINAN ***"


def _till(tmp_path: Path) -> Till:
    return open_till(make_till(tmp_path / "till"))


def _text(till: Till, key: str, **kw) -> list[str]:
    receipt = build_receipt(till.service, key, store_name="Kopi Senja", **kw)
    return decode(render_receipt(receipt, width=42)).text


def _record(till: Till, data: dict):
    return till.service.record_sale(parse_sale(data, now=till.service.now()))


def test_a_reprint_is_the_original_marked_as_a_copy(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        m = till.service.enroll("0812-1111-2222", "Sari")
        # Rp 500.000 in one sale completes the monthly spend mission: +5 bonus on top.
        r1 = _record(till, sale("R1", member=m.id, qty=20))
        assert r1.stamps_awarded > 5
        original = _text(till, r1.key)
        _record(till, sale("R2", member=m.id, qty=4))  # her balance moves on afterwards
        copy = _text(till, r1.key, copy=True)
    assert f"Selamat! Kamu dapat {r1.stamps_awarded} stempel" in original
    assert copy[0] == COPY_ID and copy[-1] == COPY_ID
    assert copy[1:-1] == original  # same stamps, same mission bonus, the balance of that day


def test_a_reprint_of_a_voided_sale_says_so(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        m = till.service.enroll("0812-1111-2222", "Sari")
        r = _record(till, sale("R1", member=m.id, qty=4))
        till.service.refund("R1")
        copy = _text(till, r.key, copy=True)
        en = _text(till, r.key, copy=True, language="en")
    assert "*** DIBATALKAN ***" in copy and f"{r.stamps_awarded} stempel ditarik" in copy
    assert "*** VOIDED ***" in en and "*** COPY ***" in en


def test_a_partial_refund_shows_the_amount(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        r = _record(till, sale("R1", qty=4))
        till.service.refund("R1", {"KOPI-SUSU": 1})
        copy = _text(till, r.key, copy=True)
    assert any(line.startswith("Refund") and line.endswith("-Rp 25.000") for line in copy)
    assert "*** DIBATALKAN ***" not in copy


def test_a_discount_is_printed_above_the_total(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        data = sale("D1", qty=4)
        data["discount"], data["total"] = 10000, 90000  # Rp 100.000 of lines, Rp 10.000 off
        r = _record(till, data)
        text = _text(till, r.key)
    discount = next(i for i, line in enumerate(text) if line.startswith("Diskon"))
    assert text[discount].endswith("-Rp 10.000")
    assert text[discount + 1].startswith("TOTAL") and text[discount + 1].endswith("Rp 90.000")


def test_completed_missions_and_ready_rewards_are_news_on_the_receipt(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        m = till.service.enroll("0812-1111-2222", "Sari")
        r = _record(till, sale("R1", member=m.id, qty=20))
        text = _text(till, r.key)
        plain = _text(till, _record(till, sale("R2", qty=1)).key)
    assert "Misi selesai: Belanja Rp 500.000 sebulan" in text
    assert "  +5 stempel bonus" in text and "  Lencana baru: Sultan Kopi" in text
    ready = text.index("Hadiah siap ditukar:")
    assert "- Gratis 1 Es Kopi Susu" in text[ready:] and "- Gratis 1 Croissant" in text[ready:]
    assert "- Tumbler Kopi Senja" not in text  # Silver and Gold only
    assert not any("Hadiah siap" in line or "Misi selesai" in line for line in plain)


def test_the_claim_qr_says_where_to_scan_and_until_when(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        r = _record(till, sale("G1"))
        event = till.service.store.sale_event(r.key)
        assert event is not None
        until = dt.datetime.fromtimestamp(event.body["claim"]["expires"], dt.UTC)
        day = until.astimezone(till.program.zone).date()
        doc = decode(render_receipt(build_receipt(till.service, r.key, store_name="Kopi Senja")))
    assert doc.qr == [r.claim]
    assert "Scan di HP kamu: klaim 3 stempel" in doc.text
    assert "di klaim.kopisenja.id" in doc.text
    assert f"berlaku s.d. {local_date(day, 'id')}" in doc.text
    assert local_date(dt.date(2026, 12, 4), "id") == "4 Des 2026"
    assert claim_host("HTTPS://KLAIM.KOPISENJA.ID/") == "klaim.kopisenja.id"


def test_no_blank_paper_before_the_cut(tmp_path: Path) -> None:
    with _till(tmp_path) as till:
        r = _record(till, sale("R1"))
        data = render_receipt(build_receipt(till.service, r.key, store_name="Kopi Senja"))
    doc = decode(data)
    assert isinstance(doc.blocks[-1], Cut) and len(doc.cuts) == 1
    last = [b for b in doc.blocks if isinstance(b, TextLine)][-1]
    assert last.text == "Terima kasih!" and last.feed == 0
    # GS V 65 0: the printer feeds only to its own cutter; no ESC d 6 of blank lines first.
    assert data.endswith(b"\x1dVA\x00") and b"\x1bd" not in data


def test_the_card_bar_is_the_one_the_readme_shows(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    with _till(tmp_path) as till:
        m = till.service.enroll("0812-1111-2222", "Sari")
        r = _record(till, sale("R1", member=m.id, qty=4))
        text = _text(till, r.key)
    bar = next(line.strip() for line in text if line.strip().endswith("/10"))
    assert bar == "█████░░░░░ 5/10" and "`█████░░░░░ 5/10`" in readme


def test_a_redemption_slip_prints_large_and_cuts_short() -> None:
    at = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    data = render_slip(Slip("Kopi Senja", "TUKAR HADIAH", at, "Tumbler Kopi Senja",
                            ("Sari", "-40 stempel, saldo 286")))
    doc = decode(data)
    assert doc.text[:3] == ["Kopi Senja", "TUKAR HADIAH", "23/11/2026 09:30"]
    big = next(line for line in doc.lines if line.text == "Tumbler Kopi Senja")
    assert big.size == (1, 2) and big.bold
    assert "-40 stempel, saldo 286" in doc.text
    assert data.endswith(b"\x1dVA\x00")


def test_the_view_of_a_regulars_kept_state_is_the_fold_of_their_history(tmp_path: Path, monkeypatch) -> None:
    # The panel's view and a receipt's come from the member's kept state, not from a fold of
    # every visit; over a year of visits, a redemption, a refund and stamps expiring, each equals
    # the fold (`member_view`) of the history at that moment, and the receipt of each sale reads
    # the same whether built right after it (kept state) or later (the fold).
    from tillstamp.agent import service as service_module
    from tillstamp.agent.receipts import _member_fields
    from tillstamp.loyalty import events as ev
    from tillstamp.loyalty.projections import member_view

    folds = []  # the receipts that fell back to folding the history
    monkeypatch.setattr(service_module, "member_view", lambda *a: folds.append(a) or member_view(*a))
    now = [dt.datetime(2025, 11, 3, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))]
    with open_till(make_till(tmp_path / "till"), clock=lambda: now[0]) as till:
        svc = till.service
        m = svc.enroll("0812-1111-2222", "Sari").id
        built = {}
        for day in range(0, 400, 9):
            now[0] += dt.timedelta(days=9, minutes=7)
            r = _record(till, {**sale(f"R{day}", member=m, qty=1 + day % 5), "at": now[0].isoformat()})
            event = svc.store.sale_event(r.key)
            built[r.key] = _member_fields(svc, m, event, "id")  # as the spooler builds it, right after
            if day == 270:
                svc.redeem(m, "kopi-gratis")
            if day == 360:
                svc.refund(f"R{day - 9}")
            history = svc.member_events(m)
            assert svc.view(m) == member_view(svc.program, m, history, now[0])
        assert any(e.kind == ev.EXPIRED for e in svc.member_events(m))  # the year went round
        assert not folds
        last = now[0]
        for later in (40, 200, 420):  # the panel between sales: stamps due, not yet written off
            now[0] = last + dt.timedelta(days=later)
            assert svc.view(m) == member_view(svc.program, m, svc.member_events(m), now[0])
        for key, fields in built.items():  # later, after everything: folds of the shorter histories
            assert _member_fields(svc, m, svc.store.sale_event(key), "id") == fields, key
        assert len(folds) == len(built) - 1  # all but the last sale's
        assert svc.view(m).visits == 45
