"""Amounts on the wire: integer minor units inside carrierpay, a carrier's own format outside."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


class AmountError(ValueError):
    pass


def format_amount(amount_minor: int, fmt: str, exponent: int) -> str | int:
    """150 -> "1.50" (major_decimal, exponent 2) or 150 (minor). Never goes through a float."""
    if amount_minor is None:
        return None
    amount_minor = int(amount_minor)
    if fmt == "minor":
        return amount_minor
    return str((Decimal(amount_minor).scaleb(-exponent)).quantize(Decimal(1).scaleb(-exponent)))


def parse_amount(value: Any, fmt: str, exponent: int) -> int | None:
    """A carrier's amount back to minor units; refuses fractions of a minor unit instead of rounding."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise AmountError(f"not an amount: {value!r}") from exc
    minor = number if fmt == "minor" else number.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise AmountError(f"{value!r} is not a whole number of minor units")
    return int(minor)
