"""What a budget may be, and the amounts of its metric it notifies at."""

import math
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tokenpulse.budgets.windows import PERIODS
from tokenpulse.decimals import EXACT, decimal_text
from tokenpulse.errors import Problem
from tokenpulse.launches.milestones import Sum
from tokenpulse.launches.thresholds import AMOUNT, AMOUNT_DIGITS
from tokenpulse.rollups.costs import COST
from tokenpulse.rollups.selection import MEASURES

METRICS = (*MEASURES, COST)
MOST_THRESHOLDS = 20
PERCENT_MOST = Decimal(1000)
PERCENT_PLACES = 10

_COUNT = re.compile(r"[1-9][0-9]{0,18}")
_BIGGEST = 2**63 - 1


@dataclass(frozen=True)
class Threshold:
    percent: Decimal | None
    """Of the limit; None for an absolute amount."""
    amount: Decimal
    """In the metric's units: a count, or an amount of the currency."""


def sought(metric: str, amount: Decimal) -> Sum:
    """An amount of `metric` in the units milestone searches sum in: a count, or millionths of
    the currency."""
    return amount.scaleb(6, EXACT) if metric == COST else int(amount)


def amount_problem(metric: str, value: object) -> str | None:
    """Why `value` is not a limit or amount of `metric`, or None."""
    if metric == COST:
        if not isinstance(value, str) or AMOUNT.fullmatch(value) is None:
            return (
                f'must be an amount such as "500" or "0.50" for metric=cost, as a string (digits, '
                f"an optional point, at most {AMOUNT_DIGITS[0]} digits before it and "
                f"{AMOUNT_DIGITS[1]} after)"
            )
        if not Decimal(value):
            return "must be more than 0"
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        return f"must be a positive integer for metric={metric}, as a string or a number"
    text = str(value)
    if _COUNT.fullmatch(text) is None or int(text) > _BIGGEST:
        return f"must be a positive integer of at most {_BIGGEST} for metric={metric}"
    return None


def percent_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number: a percentage of the limit"
    percent = Decimal(str(value))
    if not 0 < percent <= PERCENT_MOST or not percent.is_finite():
        return f"must be more than 0 and at most {PERCENT_MOST}"
    exponent = percent.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > PERCENT_PLACES:
        return f"may have at most {PERCENT_PLACES} decimal places"
    return None


def zone_problem(tz: str) -> str | None:
    if tz not in _zones():
        return f"must be an IANA time zone such as Europe/Berlin or UTC, got {tz[:64]!r}"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        return f"is a time zone this machine has no rules for: {tz[:64]!r}"
    return None


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones() | {"UTC"})


def thresholds_of(
    metric: str, limit: Decimal, percents: list[Decimal], amounts: list[Decimal]
) -> list[Threshold]:
    """Each threshold once, in increasing amount: a percentage's amount, for a measure raised to
    a whole count (a running sum of counts reaches 12.5 only at 13)."""
    found: dict[Decimal, Threshold] = {}
    with localcontext(EXACT):
        for percent in percents:
            share = (limit * percent / 100).normalize()
            amount = share if metric == COST else Decimal(math.ceil(share))
            found.setdefault(amount, Threshold(percent, amount))
    for amount in amounts:
        found.setdefault(amount, Threshold(None, amount))
    return sorted(found.values(), key=lambda threshold: threshold.amount)


def metric_text(metric: str, amount: Decimal) -> int | str:
    """An amount of `metric` as the API writes it: a count as a number, money as a string."""
    if metric == COST:
        return decimal_text(amount)
    return int(amount)


def percent_json(percent: Decimal | None) -> int | float | None:
    if percent is None:
        return None
    if percent == percent.to_integral_value():
        return int(percent)
    return float(percent)


def since_problem(period: str, since: datetime | None) -> Problem | None:
    if period == "since" and since is None:
        return Problem("since", 'is required with window "since"')
    if period != "since" and since is not None:
        return Problem("since", 'is given only with window "since"')
    return None


def period_problem(period: object) -> str | None:
    if period not in PERIODS:
        return f"must be one of {', '.join(PERIODS)}"
    return None
