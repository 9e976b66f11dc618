"""Phone numbers in E.164, so `0812-3456-7890`, `+62 812 3456 7890` and `6281234567890`
are the same member. Parsing is phonenumbers' (Google's libphonenumber metadata)."""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "ID"
_PHONE_CHARS = re.compile(r"^[+()\d\s.\-]{6,32}$")


class PhoneError(ValueError):
    """Text that is not a valid phone number."""


def looks_like_phone(text: str) -> bool:
    """True for text made only of the characters people type in phone numbers."""
    return bool(_PHONE_CHARS.match(text.strip())) and sum(c.isdigit() for c in text) >= 6


def normalize_phone(text: str, region: str = DEFAULT_REGION) -> str:
    """The E.164 form of a phone number typed in any common Indonesian (or international) way."""
    raw = text.strip()
    if not looks_like_phone(raw):
        raise PhoneError(f"phone: {text!r} is not a phone number")
    digits = re.sub(r"\D", "", raw)
    # "6281234567890" is the E.164 form with the plus left off, common on WhatsApp links.
    if not raw.startswith(("+", "0")) and digits.startswith("62") and region == "ID":
        raw = "+" + digits
    try:
        num = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise PhoneError(f"phone: {text!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(num):
        raise PhoneError(f"phone: {text!r} is not a valid number")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
