"""What a price version may be, however it is set: through the API, the command line or a file."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from tokenpulse.decimals import decimal_text
from tokenpulse.errors import Problem
from tokenpulse.instants import floor_to
from tokenpulse.tables import PRICE_PLACES

PARTS = ("input", "cached_input", "cache_write_input", "output", "reasoning")
"""What a version prices, per million tokens: uncached input (input tokens neither read from nor
written to a cache), cached input, input written to a cache, output, and the reasoning part of
output."""

PRICE_DIGITS = PRICE_PLACES
"""Digits a price may have on either side of its point: stored as numeric(24, 12)."""

PRICE_PATTERN = rf"^[0-9]{{1,{PRICE_DIGITS}}}(\.[0-9]{{1,{PRICE_DIGITS}}})?$"
"""What a price's text must match, as OpenAPI states it."""
_DECIMAL = re.compile(PRICE_PATTERN.removeprefix("^").removesuffix("$"))


@dataclass(frozen=True, slots=True)
class Prices:
    """One version's prices per million tokens. `reasoning` None: priced as output."""

    input: Decimal
    cached_input: Decimal
    cache_write_input: Decimal
    output: Decimal
    reasoning: Decimal | None = None

    def as_json(self) -> dict[str, str | None]:
        return {
            part: None if (value := getattr(self, part)) is None else decimal_text(value)
            for part in PARTS
        }


def price_problem(text: object) -> str | None:
    """Why `text` is not a price, or None when it is one: a plain decimal string, never
    negative, with at most PRICE_DIGITS digits before and after the point."""
    if not isinstance(text, str):
        return 'must be a decimal string such as "2.50"'
    if _DECIMAL.fullmatch(text) is None:
        return (
            f'must be a decimal string such as "2.50" (digits, an optional point, at most '
            f"{PRICE_DIGITS} digits on each side; no sign or exponent), got {text[:40]!r}"
        )
    return None


def effective_from_problem(effective_from: datetime) -> str | None:
    if floor_to(effective_from, timedelta(minutes=1)) != effective_from:
        return "must be a whole minute (seconds and fractions 0): a price applies from a minute"
    return None


def checked_prices(
    given: dict[str, object], field: str | None = "per_million_tokens"
) -> Prices | list[Problem]:
    """The prices `given` names, with the defaults of what it leaves out, or every problem with
    them, each named `field.part` (the part alone when `field` is None).

    `input` and `output` are required. Cached input and cache writes left out cost what
    uncached input does (a provider that prices no cache discount charges them as input);
    reasoning left out costs what output does.
    """

    def named(part: str) -> str:
        return part if field is None else f"{field}.{part}"

    problems = [
        Problem(named(name), f"is not a price part: the parts are {', '.join(PARTS)}")
        for name in given
        if name not in PARTS
    ]
    values: dict[str, Decimal] = {}
    for part in PARTS:
        text = given.get(part)
        if text is None:
            if part in ("input", "output"):
                problems.append(Problem(named(part), "is required"))
            continue
        if (problem := price_problem(text)) is not None:
            problems.append(Problem(named(part), problem))
        else:
            values[part] = Decimal(str(text))
    if problems:
        return problems
    return Prices(
        input=values["input"],
        cached_input=values.get("cached_input", values["input"]),
        cache_write_input=values.get("cache_write_input", values["input"]),
        output=values["output"],
        reasoning=values.get("reasoning"),
    )
