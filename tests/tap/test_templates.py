"""Templates and extraction: the shipped samples, Indonesian receipts, bad templates, framing."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from tillstamp.drivers.escpos_decode import decode
from tillstamp.loyalty.sale import parse_sale
from tillstamp.tap import (
    NoMatch,
    TemplateError,
    extract,
    extract_any,
    load_template,
    shipped_templates,
)
from tillstamp.tap.extract import parse_amount
from tillstamp.tap.framing import Framer
from tillstamp.tap.template import parse_template, resolve_templates

from .conftest import DATA, SAMPLE, struk

NOW = dt.datetime(2026, 11, 23, 9, tzinfo=dt.UTC)


def by_name(name: str):
    return resolve_templates(name)[0]


def test_escpos_tools_sample_total_is_1425_cents(shared_data):
    text = decode(SAMPLE.read_bytes()).text
    r = extract(text, by_name("escpos-tools-sample"))
    assert r.total == 1425 and r.decimals == 2
    assert [(i.name, i.amount) for i in r.items] == [
        ("Example item #1", 400), ("Another thing", 350), ("Something else", 100), ("A final item", 445)]
    assert r.at is not None and r.at.isoformat() == "2015-04-06T14:56:25+00:00"
    assert r.receipt is None and r.key.startswith("P-")  # no number: keyed by its content
    sale = parse_sale(r.sale_dict(), now=NOW)  # tax becomes a line so the Service accepts it
    assert sale.total == 1425 and sale.lines[-1].sku == "TAP-OTHER" and sale.lines[-1].price == 130


def test_sample_matches_without_naming_a_template(shared_data):
    r = extract_any(decode(SAMPLE.read_bytes()).text, shipped_templates())
    assert r.template == "escpos-tools-sample" and r.total == 1425


def test_indonesian_struk_generated_with_python_escpos():
    data = struk(items=(("Es Kopi Susu Aren", 2, 25000), ("Kopi Tubruk Café", 1, 15000)), discount=5000,
                 pay=("QRIS", 60000))
    r = extract_any(decode(data).text, shipped_templates())
    assert r.template == "struk-id"
    assert r.receipt == "INV-2611-0042" and r.total == 60000
    assert r.at is not None and r.at.isoformat() == "2026-11-23T09:15:00+07:00"
    assert [(i.name, i.qty, i.price, i.amount) for i in r.items] == [
        ("Es Kopi Susu Aren", 2, 25000, 50000), ("Kopi Tubruk Café", 1, 15000, 15000),
        ("Diskon Member", 1, -5000, -5000)]
    assert [(p.method, p.amount) for p in r.payments] == [("QRIS", 60000)]
    sale = parse_sale(r.sale_dict(member="01HMEMBER"), now=NOW)
    assert sale.discount == 5000 and sale.member == "01HMEMBER" and len(sale.lines) == 2


def test_code_page_selected_by_the_stream_is_used():
    data = b"\x1b@\x1bt\x13" + "Kopi Tubruk Café ñ €\n".encode("cp858") + b"\x1dV\x00"
    assert decode(data).text[0] == "Kopi Tubruk Café ñ €"
    assert decode(b"\x1b@" + "Café\n".encode("cp437")).text[0] == "Café"  # CP437 by default


def test_receipt_without_number_is_keyed_by_its_printed_content():
    t = by_name("struk-id")
    a = extract(decode(struk(no=None)).text, t)
    again = extract(decode(struk(no=None, reprint=True)).text, t)  # "*** CETAK ULANG ***" ignored
    later = extract(decode(struk(no=None, when="23/11/2026 09:16")).text, t)
    assert a.receipt is None and a.key == again.key != later.key


@pytest.mark.parametrize("text,decimals,thousands,mark,want", [
    ("Rp 25.000", 0, ".", ",", 25000), ("1.234.567", 0, ".", ",", 1234567), ("-5.000", 0, ".", ",", -5000),
    ("14.25", 2, ",", ".", 1425), ("1,234.5", 2, ",", ".", 123450), ("$ 0.99", 2, ",", ".", 99),
    ("12.500,50", 2, ".", ",", 1250050),
])
def test_amounts_are_ints_in_minor_units(text, decimals, thousands, mark, want):
    t = parse_template(f'[template]\nname="t"\ndecimals={decimals}\nthousands="{thousands}"\n'
                       f'decimal_mark="{mark}"\n[fields]\ntotal=\'(?P<amount>.+)\'\n')
    assert parse_amount(text, t) == want


def test_bad_amount_is_no_match():
    t = by_name("escpos-tools-sample")
    with pytest.raises(NoMatch):
        parse_amount("1.234", t)  # three decimals for a two-decimal currency
    with pytest.raises(NoMatch):
        parse_amount("abc", t)


@pytest.mark.parametrize("text,why", [
    ("not toml [", "not valid TOML"),
    ("[template]\nname='x'\n", "needs a [template] and a [fields]"),
    ("[template]\nname='x'\n[fields]\nreceipt='(?P<receipt>.)'\n", "total is required"),
    ("[template]\nname='x'\n[fields]\ntotal='(unclosed'\n", "bad regular expression"),
    ("[template]\nname='x'\n[fields]\ntotal='TOTAL (\\d+)'\n", "named group(s) amount"),
    ("[template]\nname='x'\nflavour=1\n[fields]\ntotal='(?P<amount>.)'\n", "unknown key"),
    ("[template]\nname='x'\ndecimals=9\n[fields]\ntotal='(?P<amount>.)'\n", "decimals"),
    ("[template]\nname='x y'\n[fields]\ntotal='(?P<amount>.)'\n", "name must be"),
])
def test_garbage_templates_are_refused_with_a_reason(text, why):
    with pytest.raises(TemplateError, match=why.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_template(text, "bad.toml")


def test_template_files_load_and_unknown_names_are_refused(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text("[template]\nname='mine'\n[fields]\ntotal='^JUMLAH (?P<amount>[\\d.]+)$'\n")
    assert load_template(f).name == "mine" and resolve_templates(str(f))[0].name == "mine"
    with pytest.raises(TemplateError, match="struk-id"):
        resolve_templates("nope")
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing.toml")


def test_framer_finds_the_decoders_cuts_in_every_sample_and_chunking(shared_data):
    rnd = random.Random(7)
    for f in sorted(DATA.glob("*.bin")):
        data = f.read_bytes()
        want = [c.offset for c in decode(data).cuts]
        for _ in range(5):
            fr, got, i = Framer(), [], 0
            while i < len(data):
                n = rnd.randint(1, 64)
                safe, marks = fr.feed(data[i : i + n])
                i += n
                assert safe <= i
                got += [m.offset for m in marks if m.kind == "cut"]
            assert got == want, f.name


def test_framer_streams_image_data_without_holding_it():
    image = b"\x1dv0\x00" + (72).to_bytes(2, "little") + (1000).to_bytes(2, "little") + bytes(72_000)
    fr = Framer()
    assert fr.feed(b"Logo\n" + image[:5]) == (5, [])  # a header cut short is held
    assert fr.feed(image[5:30_000])[0] == 5 + 30_000  # then the data flows as it comes
    safe, marks = fr.feed(image[30_000:] + b"\x1dV\x00\x1b")
    assert safe == 5 + len(image) + 3 and [m.kind for m in marks] == ["cut"]  # ESC held
