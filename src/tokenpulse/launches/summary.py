"""A launch at a glance: usage since it went live, its first day, its busiest minute, milestones."""

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Select, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to, floor_to, format_rfc3339
from tokenpulse.launches.milestones import DEFAULT_THRESHOLDS, find_crossings
from tokenpulse.launches.store import Launch
from tokenpulse.rollups import MINUTE, Grain
from tokenpulse.tables import ROLLUP_COUNTS
from tokenpulse.usage.aggregate import (
    MEASURES,
    Selection,
    busiest_minute,
    measures_of,
    rollup_counts,
)
from tokenpulse.usage.binds import SHAPES_CACHED, filter_values, span_values
from tokenpulse.usage.cover import Span, cover
from tokenpulse.usage.raw import event_counts, sum_events

FIRST_DAY = timedelta(hours=24)


async def launch_summary(
    connection: AsyncConnection, launch: Launch, selection: Selection, *, until: datetime
) -> dict[str, Any]:
    """The summary of `launch` over the usage `selection` matches (its model, maybe one tenant).

    `until` must lie past every stored event; run it in one REPEATABLE READ transaction.
    """
    start = launch.launched_at
    progress = await find_crossings(
        connection,
        selection,
        measure="total_tokens",
        thresholds=DEFAULT_THRESHOLDS,
        since=start,
        until=until,
    )
    peak = await _peak_minute(connection, selection, start, until)
    since_launch, first_24h = await exact_totals(
        connection, selection, [(start, until), (start, start + FIRST_DAY)]
    )
    return {
        **launch.as_json(),
        "since_launch": since_launch,
        "first_24h": first_24h,
        "peak_minute": None
        if peak is None
        else {"start": format_rfc3339(peak[0]), "total_tokens": peak[1]},
        "milestones": [
            {
                "threshold": crossing.threshold,
                "crossed_at": _instant(crossing.crossed_at),
                "seconds_after_launch": None
                if crossing.crossed_at is None
                else (crossing.crossed_at - start).total_seconds(),
                "event_id": crossing.event_id,
            }
            for crossing in progress.crossings
        ],
    }


async def exact_totals(
    connection: AsyncConnection, selection: Selection, ranges: Sequence[Span]
) -> list[dict[str, int]]:
    """The six measures over each [start, end) of `ranges`, for any instants: rollups for the
    whole minutes inside, raw events for the parts of a minute at either edge. One round trip."""
    assert not selection.group_by, "exact totals are not grouped"
    zero = dict.fromkeys(MEASURES, 0)
    # Each part: the range it counts toward, and its grain (None: raw events).
    shape: list[tuple[int, Grain | None]] = []
    spans: list[Span] = []
    for index, (start, end) in enumerate(ranges):
        first, last = ceil_to(start, MINUTE.length), floor_to(end, MINUTE.length)
        whole = cover(first, last) if first < last else []
        edges = [(start, first), (last, end)] if whole else [(start, end)]
        for grain, span in [*whole, *((None, edge) for edge in edges)]:
            if span[0] < span[1]:
                shape.append((index, grain))
                spans.append(span)
    if not shape or selection.matches_nothing:
        return [zero for _ in ranges]
    statement = _exact_totals(tuple(shape), tuple(selection.filters))
    values = {**filter_values(selection.filters), **span_values(spans)}
    found = {
        index: measures_of(counts) for index, *counts in await connection.execute(statement, values)
    }
    return [found.get(index, zero) for index in range(len(ranges))]


@lru_cache(SHAPES_CACHED)
def _exact_totals(
    shape: tuple[tuple[int, Grain | None], ...], dimensions: tuple[str, ...]
) -> Select[Any]:
    parts = [
        (
            event_counts(dimensions, part)
            if grain is None
            else rollup_counts(grain, dimensions, part)
        ).add_columns(literal(index).label("range"))
        for part, (index, grain) in enumerate(shape)
    ]
    rows = union_all(*parts).subquery("rows")
    return select(
        rows.c.range, *(cast(func.sum(rows.c[count]), BigInteger) for count in ROLLUP_COUNTS)
    ).group_by(rows.c.range)


async def _peak_minute(
    connection: AsyncConnection, selection: Selection, start: datetime, until: datetime
) -> tuple[datetime, int] | None:
    """The minute with the most total tokens since `start`; a minute that `start` cuts counts
    only what came at or after it."""
    first = ceil_to(start, MINUTE.length)
    busiest = await busiest_minute(connection, selection, (first, until)) if first < until else None
    if first != start:
        head = await sum_events(connection, selection, start, first)
        if head["requests"] and (busiest is None or head["total_tokens"] >= busiest[1]):
            return floor_to(start, MINUTE.length), head["total_tokens"]
    return busiest


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_rfc3339(value)
