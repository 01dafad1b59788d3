"""Raw events, for what rollups cannot tell: parts of a minute, and the order inside one."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    FromClause,
    Numeric,
    Select,
    cast,
    func,
    literal,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.rollups.binds import (
    SHAPES_CACHED,
    filter_values,
    filtered,
    span_values,
    within,
)
from tokenpulse.rollups.costs import COST, priced_rows
from tokenpulse.rollups.cover import Span
from tokenpulse.rollups.running import first_reaching, search
from tokenpulse.rollups.selection import MEASURES, Selection, measures_of
from tokenpulse.tables import ROLLUP_COUNTS, usage_event


def event_measure(measure: str) -> ColumnElement[Any]:
    """One event's contribution to `measure`."""
    if measure == "requests":
        return literal(1, BigInteger)
    if measure == "total_tokens":
        return usage_event.c.input_tokens + usage_event.c.output_tokens
    return usage_event.c[measure]


def _matching(dimensions: tuple[str, ...], part: int) -> list[ColumnElement[bool]]:
    return [within(usage_event.c.occurred_at, part), *filtered(usage_event, dimensions)]


async def sum_events(
    connection: AsyncConnection, selection: Selection, start: datetime, end: datetime
) -> dict[str, int]:
    """The seven measures of the matching events in [start, end), which may be any instants."""
    if start >= end or selection.matches_nothing:
        return dict.fromkeys(MEASURES, 0)
    values = {**filter_values(selection.filters), **span_values([(start, end)])}
    statement = _sum_events(selection.dimensions)
    return measures_of((await connection.execute(statement, values)).one())


@lru_cache(SHAPES_CACHED)
def _sum_events(dimensions: tuple[str, ...]) -> Select[Any]:
    return event_counts(dimensions, 0)


def event_counts(dimensions: tuple[str, ...], part: int, *, priced: bool = False) -> Select[Any]:
    """The events matching the filters of `dimensions` in the span of part `part`, summed into
    one row shaped like a rollup row's counts; if `priced`, into one such row per model and
    minute, with what prices it (`priced_model`, and the minute as `at`)."""
    counts: list[ColumnElement[Any]] = [
        func.coalesce(cast(func.sum(event_measure(count)), BigInteger), 0).label(count)
        for count in ROLLUP_COUNTS
    ]
    statement = select(*counts).where(*_matching(dimensions, part))
    if not priced:
        return statement
    # A price version starts at a whole minute: one minute's events of a model share one.
    minute = func.date_trunc(
        literal_column("'minute'"), usage_event.c.occurred_at, literal_column("'UTC'")
    )
    return statement.add_columns(
        usage_event.c.model.label("priced_model"), minute.label("at")
    ).group_by(usage_event.c.model, minute)


async def event_cost(
    connection: AsyncConnection, selection: Selection, start: datetime, end: datetime
) -> Decimal | None:
    """The cost in millionths of the matching events in [start, end), which may be any
    instants; None when none of them is priced."""
    if start >= end or selection.matches_nothing:
        return None
    values = {**filter_values(selection.filters), **span_values([(start, end)])}
    cost: Decimal | None = (
        await connection.execute(_event_cost(selection.dimensions), values)
    ).scalar_one()
    return cost


@lru_cache(SHAPES_CACHED)
def _event_cost(dimensions: tuple[str, ...]) -> Select[Any]:
    source, cost = _priced_events(dimensions)
    return select(func.sum(cost)).select_from(source).where(*_matching(dimensions, 0))


def _priced_events(dimensions: tuple[str, ...]) -> tuple[FromClause, ColumnElement[Any]]:
    """Events joined to the price version in effect at each, and each one's cost in millionths
    (NULL where it is not priced)."""
    return priced_rows(usage_event, usage_event.c.model, usage_event.c.occurred_at, dimensions)


async def crossing_events(
    connection: AsyncConnection,
    selection: Selection,
    measure: str,
    searches: Sequence[tuple[Span, int | Decimal]],
) -> list[tuple[datetime, str, int | Decimal] | None]:
    """For each (span, sought sum): the first matching event in the span, in (occurred_at,
    event_id) order, at which the running sum of `measure` from the span's start reaches it, with
    that running sum; or None if it never does. One round trip for all of them."""
    if not searches or selection.matches_nothing:
        return [None] * len(searches)
    statement = _crossings(selection.dimensions, measure, len(searches))
    found = await search(connection, statement, selection.filters, searches)
    return [None if row is None else (row.occurred_at, row.event_id, row.reached) for row in found]


@lru_cache(SHAPES_CACHED)
def _crossings(dimensions: tuple[str, ...], measure: str, searches: int) -> CompoundSelect[Any]:
    source: FromClause = usage_event
    if measure == COST:
        source, cost = _priced_events(dimensions)
        # An event not priced adds nothing to the running sum.
        value: ColumnElement[Any] = func.coalesce(cost, 0)
    else:
        value = event_measure(measure)
    return union_all(
        *(
            first_reaching(
                select(usage_event.c.occurred_at, usage_event.c.event_id, value.label("value"))
                .select_from(source)
                .where(*_matching(dimensions, part)),
                order=["occurred_at", "event_id"],
                value="value",
                part=part,
                sums=Numeric if measure == COST else BigInteger,
            )
            for part in range(searches)
        )
    )
