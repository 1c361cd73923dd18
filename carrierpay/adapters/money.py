"""Amounts on the wire: integer minor units inside carrierpay, a carrier's own format outside."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

MAX_MINOR = 2**63 - 1  # bigint, as the database stores amounts
MAX_MINOR_DIGITS = 18  # MAX_MINOR has 19 digits; a larger adjusted exponent can never fit


class AmountError(ValueError):
    pass


class JsonNumber(Decimal):
    """A decimal amount that a JSON body carries as a number (`"amount": 1.99`), written digit for digit."""


class ExactFloat(float):
    """A number read from JSON that keeps the digits it was written with, so an amount parses exactly."""

    text: str

    def __new__(cls, text: str) -> ExactFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


def format_amount(amount_minor: int, fmt: str, exponent: int) -> str | int | JsonNumber:
    """150 -> "1.50" (major_decimal, exponent 2), 1.50 as a JSON number (major_number) or 150 (minor).
    Never goes through a float."""
    if amount_minor is None:
        return None
    amount_minor = int(amount_minor)
    if fmt == "minor":
        return amount_minor
    major = (Decimal(amount_minor).scaleb(-exponent)).quantize(Decimal(1).scaleb(-exponent))
    return JsonNumber(major) if fmt == "major_number" else str(major)


def parse_amount(value: Any, fmt: str, exponent: int) -> int | None:
    """A carrier's amount back to minor units; refuses fractions of a minor unit instead of rounding."""
    if value is None or value == "":
        return None
    if isinstance(value, float):  # from JSON: the digits as written when known, not the float's rounding
        value = getattr(value, "text", None) or repr(value)
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation as exc:
        raise AmountError(f"not an amount: {text[:20]!r}") from exc
    if not number.is_finite():
        raise AmountError(f"not an amount: {text[:20]!r}")
    shift = 0 if fmt == "minor" else exponent
    # Judged on the exponent before any arithmetic: "1e999999999" would otherwise overflow the
    # decimal context or build an integer of a billion digits. The database keeps amounts in bigint.
    if number and number.adjusted() + shift > MAX_MINOR_DIGITS:
        raise AmountError(f"{text[:20]!r} is out of range")
    if number and number.adjusted() + shift < 0:
        raise AmountError(f"{text[:20]!r} is not a whole number of minor units")
    minor = number.scaleb(shift)
    if minor != minor.to_integral_value():
        raise AmountError(f"{text[:20]!r} is not a whole number of minor units")
    amount = int(minor)
    if not -MAX_MINOR <= amount <= MAX_MINOR:
        raise AmountError(f"{text[:20]!r} is out of range")
    return amount
