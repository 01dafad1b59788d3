"""What a milestone's threshold may be: a count for a measure, an amount of money for cost."""

import re
from decimal import Decimal
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from tokenpulse.decimals import EXACT
from tokenpulse.errors import InvalidParameters
from tokenpulse.launches.milestones import Sum
from tokenpulse.rollups.costs import COST, cost_text
from tokenpulse.tables import PRICE_PLACES
from tokenpulse.text import echo
from tokenpulse.validation_messages import house_message

_COUNT = TypeAdapter(Annotated[int, Field(ge=1, le=2**63 - 1)])

AMOUNT_DIGITS = (18, PRICE_PLACES + 6)
"""Digits an amount may have before and after its point: after it, as many as a cost has (a
price's, per million tokens)."""
AMOUNT = re.compile(rf"[0-9]{{1,{AMOUNT_DIGITS[0]}}}(\.[0-9]{{1,{AMOUNT_DIGITS[1]}}})?")
"""What an amount of money's text must match."""


def parsed_threshold(metric: str, text: str) -> Sum:
    """The threshold `text` states for `metric`, in the units of its running sum: a count of a
    measure, or the millionths of an amount of cost (prices are per million tokens)."""
    if metric == COST:
        if AMOUNT.fullmatch(text) is None:
            raise InvalidParameters.of(
                "threshold",
                f'must be an amount such as "1000000" or "0.50" for metric=cost (digits, an '
                f"optional point, at most {AMOUNT_DIGITS[0]} digits before it and "
                f"{AMOUNT_DIGITS[1]} after), got {echo(text, 40)!r}",
            )
        amount = Decimal(text)
        if not amount:
            raise InvalidParameters.of("threshold", f"must be more than 0, got {text}")
        return amount.scaleb(6, EXACT)
    try:
        return _COUNT.validate_python(text)
    except ValidationError as refused:
        (error,) = refused.errors()
        message = house_message(error["type"], error["input"], error.get("ctx", {}))
        raise InvalidParameters.of("threshold", message) from None


def answered_sum(value: Sum | None) -> int | str | None:
    """A running sum as the API answers it: a count, or cost (a Decimal of millionths) as an
    exact decimal string of the currency; None, for cost, when nothing is priced."""
    if isinstance(value, Decimal):
        return cost_text(value)
    return value
