"""Cost: token sums priced by the price version in effect at each minute.

A version applies from its `effective_from` (a whole minute) until the next version of its
model. A read that prices its rows first splits its range at every version boundary inside it,
so that no rollup row it reads spans two versions; each row is then priced by the one version in
effect at its `bucket_start`, and an event by the one in effect at its `occurred_at`. Cost is
summed in PostgreSQL's numeric, exactly, in millionths (prices are per million tokens), and
divided by a million in Python.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Subquery, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.decimals import decimal_text, per_million
from tokenpulse.rollups.binds import INSTANT, filtered
from tokenpulse.rollups.cover import Span, cover_buckets
from tokenpulse.rollups.grains import Grain
from tokenpulse.rollups.selection import Selection
from tokenpulse.tables import price_version

COST = "cost"
"""The metric of a running sum of cost, beside the measures."""

PRICED_COUNTS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
)
"""The counts a cost is computed from."""


def versions_in_effect(dimensions: tuple[str, ...]) -> Subquery:
    """Every version in effect, with the instant the next version of its model starts (`until`,
    NULL for the last) and the price of reasoning tokens filled in (that of output if unset);
    only those of the models filtered, if `dimensions` filter models."""
    version = price_version.c
    return (
        select(
            version.model,
            version.effective_from,
            func.lead(version.effective_from)
            .over(partition_by=version.model, order_by=version.effective_from)
            .label("until"),
            version.input,
            version.cached_input,
            version.cache_write_input,
            version.output,
            func.coalesce(version.reasoning, version.output).label("reasoning"),
        )
        .where(version.ended_at.is_(None), *filtered(price_version, set(dimensions) & {"model"}))
        .subquery("prices")
    )


def in_effect(
    prices: Subquery, model: ColumnElement[Any], at: ColumnElement[Any]
) -> ColumnElement[bool]:
    """Whether the version of `prices` is the one in effect for `model` at `at`."""
    return and_(
        prices.c.model == model,
        prices.c.effective_from <= at,
        or_(prices.c.until.is_(None), at < prices.c.until),
    )


def cost_of(counts: Mapping[str, ColumnElement[Any]], prices: Subquery) -> ColumnElement[Any]:
    """The cost in millionths of the tokens `counts` holds, at the prices of `prices`: uncached
    input is input less cached and cache-write input; output less reasoning is priced as
    output."""
    cached, written = counts["cached_input_tokens"], counts["cache_write_input_tokens"]
    reasoning = counts["reasoning_tokens"]
    cost: ColumnElement[Any] = (
        (counts["input_tokens"] - cached - written) * prices.c.input
        + cached * prices.c.cached_input
        + written * prices.c.cache_write_input
        + (counts["output_tokens"] - reasoning) * prices.c.output
        + reasoning * prices.c.reasoning
    )
    return cost


def priced_join(
    rows: Subquery, dimensions: tuple[str, ...]
) -> tuple[FromClause, ColumnElement[Any]]:
    """`rows` (the counts, `priced_model` and `at` of each) joined to the version in effect for
    each, and the sum of their cost in millionths: NULL where none is priced. `dimensions`: those
    the read filters."""
    joined, cost = priced_rows(rows, rows.c.priced_model, rows.c.at, dimensions)
    return joined, func.sum(cost)


def priced_rows(
    rows: FromClause,
    model: ColumnElement[Any],
    at: ColumnElement[Any],
    dimensions: tuple[str, ...],
) -> tuple[FromClause, ColumnElement[Any]]:
    """`rows`, whose counts are its columns of their names, joined to the version in effect for
    `model` at `at`, and each row's cost in millionths: NULL where it is not priced."""
    prices = versions_in_effect(dimensions)
    counts = {count: rows.c[count] for count in PRICED_COUNTS}
    return rows.outerjoin(prices, in_effect(prices, model, at)), cost_of(counts, prices)


def cost_text(millionths: Decimal | None) -> str | None:
    """A cost summed in millionths, as the API answers it."""
    return None if millionths is None else decimal_text(per_million(millionths))


async def price_bounds(
    connection: AsyncConnection, selection: Selection, start: datetime, end: datetime
) -> list[datetime] | None:
    """The instants inside (start, end) at which a version of a model `selection` may match
    starts; None if no version of such a model is in effect before `end` (nothing is priced)."""
    version = price_version.c
    since = func.greatest(version.effective_from, bindparam("since", type_=INSTANT))
    statement = (
        select(since)
        .where(version.ended_at.is_(None), version.effective_from < bindparam("until"))
        .distinct()
        .order_by(since)
    )
    values: dict[str, Any] = {"since": start, "until": end}
    if models := selection.filters.get("model"):
        statement = statement.where(version.model.in_(bindparam("models", expanding=True)))
        values["models"] = list(models)
    starts = [row[0] for row in await connection.execute(statement, values)]
    if not starts:
        return None
    return [instant for instant in starts if start < instant]


async def priced_cover(
    connection: AsyncConnection, selection: Selection, bounds: Sequence[datetime]
) -> tuple[dict[Grain, list[Span]], bool]:
    """The spans to read for the buckets between `bounds` (see `cover_buckets`), split wherever
    a price version starts so that no row they read spans two; and whether anything read may be
    priced at all."""
    inside = await price_bounds(connection, selection, bounds[0], bounds[-1])
    if inside is None:
        return cover_buckets(bounds), False
    if not inside:
        return cover_buckets(bounds), True
    return cover_buckets(sorted({*bounds, *inside})), True
