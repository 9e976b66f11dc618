"""Signed tokens: every forgery, truncation and tampering is refused with its reason."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
import qrcode
from hypothesis import given
from hypothesis import strategies as st

from tillstamp.loyalty import tokens
from tillstamp.loyalty.tokens import TokenError

NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
MEMBER = "01M83FGF61CJSKM20CD6DSGCGP"
HQ = tokens.new_private_key()
TRUSTED = {tokens.key_id(HQ.public_key()): HQ.public_key()}
TERM = tokens.new_private_key()
TERMINALS = {"T1": TERM.public_key()}


def member_card(key=HQ, expires=None) -> str:
    return tokens.sign_member(key, MEMBER, NOW, expires)


def claim(stamps=3, expires=NOW + dt.timedelta(days=7), key=TERM) -> str:
    return tokens.sign_claim(key, store="JKT-01", terminal="T1", receipt="R-0009", stamps=stamps,
                             issued=NOW, expires=expires, url="HTTPS://KLAIM.KOPISENJA.ID/")


def reason(fn) -> str:
    with pytest.raises(TokenError) as err:
        fn()
    return err.value.reason


def test_member_card_round_trip_with_the_public_key_alone():
    tok = tokens.verify_member(member_card(), TRUSTED, NOW)
    assert tok.member == MEMBER and tok.issued == NOW and tok.expires is None
    # Scanners sometimes lower-case or pad with spaces.
    assert tokens.verify_member(" " + member_card().lower() + "\n", TRUSTED, NOW).member == MEMBER


def test_member_card_forgeries():
    other = tokens.new_private_key()
    assert reason(lambda: tokens.verify_member(member_card(other), TRUSTED, NOW)) == "unknown_key"
    # Re-signed by another key but claiming the trusted key id.
    good = base64.b32decode(member_card()[4:] + "=" * (-len(member_card()[4:]) % 8))
    forged_sig = other.sign(b"TS1M" + good[:-64])
    forged = "TS1M" + base64.b32encode(good[:-64] + forged_sig).decode().rstrip("=")
    assert reason(lambda: tokens.verify_member(forged, TRUSTED, NOW)) == "bad_signature"
    # Another member id with the original signature.
    tampered = bytearray(good)
    tampered[10] ^= 1
    text = "TS1M" + base64.b32encode(bytes(tampered)).decode().rstrip("=")
    assert reason(lambda: tokens.verify_member(text, TRUSTED, NOW)) == "bad_signature"


def test_member_card_truncated_unknown_version_expired():
    card = member_card()
    assert reason(lambda: tokens.verify_member(card[:-8], TRUSTED, NOW)) == "malformed"
    assert reason(lambda: tokens.verify_member(card + "AAAAAAAA", TRUSTED, NOW)) == "malformed"
    assert reason(lambda: tokens.verify_member("TS2M" + card[4:], TRUSTED, NOW)) == "unknown_version"
    assert reason(lambda: tokens.verify_member("hello", TRUSTED, NOW)) == "unknown_version"
    assert reason(lambda: tokens.verify_member("TS1M!!!!", TRUSTED, NOW)) == "malformed"
    short = member_card(expires=NOW + dt.timedelta(minutes=5))
    assert tokens.verify_member(short, TRUSTED, NOW).expires is not None
    assert reason(lambda: tokens.verify_member(short, TRUSTED, NOW + dt.timedelta(minutes=5))) == "expired"


def test_claim_round_trip_and_refusals():
    c = claim()
    tok = tokens.verify_claim(c, TERMINALS, NOW)
    assert (tok.store, tok.terminal, tok.receipt, tok.stamps) == ("JKT-01", "T1", "R-0009", 3)
    assert tok.token_id == tokens.verify_claim(claim(), TERMINALS, NOW).token_id  # deterministic
    assert reason(lambda: tokens.verify_claim(c, {}, NOW)) == "unknown_key"
    assert reason(lambda: tokens.verify_claim(c, TERMINALS, NOW + dt.timedelta(days=8))) == "expired"
    assert reason(lambda: tokens.verify_claim(claim(key=tokens.new_private_key()), TERMINALS, NOW)) == "bad_signature"
    assert reason(lambda: tokens.verify_claim(c[:-20], TERMINALS, NOW)) in ("malformed", "bad_signature")
    assert reason(lambda: tokens.verify_claim(member_card(), TERMINALS, NOW)) == "unknown_version"


def test_claim_with_more_stamps_is_refused():
    c = claim(stamps=3)
    prefix, body = c.split("TS1C")
    raw = bytearray(base64.b32decode(body + "=" * (-len(body) % 8)))
    # stamps sit just before the two u32 times and the signature
    raw[-64 - 8 - 1] = 99
    forged = prefix + "TS1C" + base64.b32encode(bytes(raw)).decode().rstrip("=")
    assert reason(lambda: tokens.verify_claim(forged, TERMINALS, NOW)) == "bad_signature"


@given(st.binary(max_size=200), st.sampled_from(["TS1M", "TS1C", "HTTPS://X/TS1C", ""]))
def test_random_payloads_never_crash(data, prefix):
    text = prefix + base64.b32encode(data).decode().rstrip("=")
    for verify in (lambda: tokens.verify_member(text, TRUSTED, NOW), lambda: tokens.verify_claim(text, TERMINALS, NOW)):
        with pytest.raises(TokenError):
            verify()


def test_tokens_fit_a_small_alphanumeric_qr():
    for payload in (member_card(), claim()):
        assert payload == payload.upper()
        qr = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        qr.add_data(payload)
        qr.make(fit=True)
        assert qr.version <= 8, (payload, qr.version)
