"""Exact decimals as the API writes them."""

from decimal import Context, Decimal

EXACT = Context(prec=80)
"""Enough digits for any price (24 digits) times any token sum (bigint, 19 digits): no
arithmetic done in it rounds."""


def decimal_text(value: Decimal) -> str:
    """`value` as a plain decimal string with no trailing zeros: 2.500000 is "2.5", 1E+2 "100"."""
    return format(value.normalize(EXACT), "f")


def per_million(value: Decimal) -> Decimal:
    """`value` divided by a million, exactly."""
    return value.scaleb(-6, EXACT)
