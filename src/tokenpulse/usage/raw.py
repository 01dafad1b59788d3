"""Raw events, for what rollups cannot tell: parts of a minute, and the order inside one."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.tables import ROLLUP_COUNTS, usage_event
from tokenpulse.usage.aggregate import Selection

MEASURES = (*ROLLUP_COUNTS, "total_tokens")


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
    sums = [
        func.coalesce(cast(func.sum(event_measure(measure)), BigInteger), 0) for measure in MEASURES
    ]
    row = (await connection.execute(select(*sums).where(*_matching(selection, start, end)))).one()
    return dict(zip(MEASURES, row, strict=True))


async def crossing_event(
    connection: AsyncConnection,
    selection: Selection,
    measure: str,
    start: datetime,
    end: datetime,
    needed: int,
) -> tuple[datetime, str] | None:
    """The first matching event in [start, end), in (occurred_at, event_id) order, at which the
    running sum of `measure` reaches `needed`; None if it never does."""
    if start >= end or selection.matches_nothing:
        return None
    order = (usage_event.c.occurred_at, usage_event.c.event_id.collate("C"))
    running = (
        select(
            usage_event.c.occurred_at,
            usage_event.c.event_id,
            func.sum(event_measure(measure)).over(order_by=order, rows=(None, 0)).label("running"),
        )
        .where(*_matching(selection, start, end))
        .subquery()
    )
    statement = (
        select(running.c.occurred_at, running.c.event_id)
        .where(running.c.running >= needed)
        .order_by(running.c.occurred_at, running.c.event_id.collate("C"))
        .limit(1)
    )
    row = (await connection.execute(statement)).one_or_none()
    return None if row is None else (row.occurred_at, row.event_id)
