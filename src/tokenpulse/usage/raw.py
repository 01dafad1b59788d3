"""Raw events, for what rollups cannot tell: parts of a minute, and the order inside one."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.tables import ROLLUP_COUNTS, usage_event
from tokenpulse.usage.aggregate import MEASURES, Selection, measures_of
from tokenpulse.usage.cover import Span


def event_measure(measure: str) -> ColumnElement[Any]:
    """One event's contribution to `measure`."""
    if measure == "requests":
        return literal(1, BigInteger)
    if measure == "total_tokens":
        return usage_event.c.input_tokens + usage_event.c.output_tokens
    return usage_event.c[measure]


def _matching(selection: Selection, start: datetime, end: datetime) -> list[ColumnElement[bool]]:
    return [
        usage_event.c.occurred_at >= start,
        usage_event.c.occurred_at < end,
        *(usage_event.c[name].in_(values) for name, values in selection.filters.items()),
    ]


async def sum_events(
    connection: AsyncConnection, selection: Selection, start: datetime, end: datetime
) -> dict[str, int]:
    """The six measures of the matching events in [start, end), which may be any instants."""
    if start >= end or selection.matches_nothing:
        return dict.fromkeys(MEASURES, 0)
    return measures_of((await connection.execute(event_counts(selection, (start, end)))).one())


def event_counts(selection: Selection, span: Span) -> Select[Any]:
    """The matching events in `span` summed into one row shaped like a rollup row's counts."""
    counts: list[ColumnElement[Any]] = [
        func.coalesce(cast(func.sum(event_measure(count)), BigInteger), 0).label(count)
        for count in ROLLUP_COUNTS
    ]
    return select(*counts).where(*_matching(selection, *span))


async def crossing_events(
    connection: AsyncConnection,
    selection: Selection,
    measure: str,
    searches: Sequence[tuple[Span, int]],
) -> list[tuple[datetime, str] | None]:
    """For each (span, needed): the first matching event in the span, in (occurred_at,
    event_id) order, at which the running sum of `measure` from the span's start reaches
    `needed`, or None if it never does. One round trip for all of them."""
    if not searches or selection.matches_nothing:
        return [None] * len(searches)
    parts = [
        _crossing(selection, measure, span, needed).add_columns(literal(index).label("search"))
        for index, (span, needed) in enumerate(searches)
    ]
    found = {
        row.search: (row.occurred_at, row.event_id)
        for row in await connection.execute(union_all(*parts))
    }
    return [found.get(index) for index in range(len(searches))]


def _crossing(selection: Selection, measure: str, span: Span, needed: int) -> Select[Any]:
    order = (usage_event.c.occurred_at, usage_event.c.event_id.collate("C"))
    running = (
        select(
            usage_event.c.occurred_at,
            usage_event.c.event_id,
            func.sum(event_measure(measure)).over(order_by=order, rows=(None, 0)).label("running"),
        )
        .where(*_matching(selection, *span))
        .subquery()
    )
    return (
        select(running.c.occurred_at, running.c.event_id)
        .where(running.c.running >= needed)
        .order_by(running.c.occurred_at, running.c.event_id.collate("C"))
        .limit(1)
    )
