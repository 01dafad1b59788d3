"""Exact totals over any instants: rollups for the whole minutes inside, raw events for the
parts of a minute at either edge."""

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Select, cast, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to, floor_to
from tokenpulse.rollups.binds import SHAPES_CACHED, filter_values, span_values
from tokenpulse.rollups.cover import Span, cover
from tokenpulse.rollups.grains import MINUTE, Grain
from tokenpulse.rollups.raw import event_counts
from tokenpulse.rollups.selection import MEASURES, Selection, measures_of
from tokenpulse.rollups.sums import rollup_counts
from tokenpulse.tables import ROLLUP_COUNTS


async def exact_totals(
    connection: AsyncConnection, selection: Selection, ranges: Sequence[Span]
) -> list[dict[str, int]]:
    """The seven measures over each [start, end) of `ranges`, for any instants: rollups for the
    whole minutes inside, raw events for the parts of a minute at either edge. One round trip."""
    assert not selection.group_by, "exact totals are not grouped"
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
        return [dict.fromkeys(MEASURES, 0) for _ in ranges]
    statement = _exact_totals(tuple(shape), selection.dimensions)
    values = {**filter_values(selection.filters), **span_values(spans)}
    found = {
        index: measures_of(counts) for index, *counts in await connection.execute(statement, values)
    }
    return [found.get(index) or dict.fromkeys(MEASURES, 0) for index in range(len(ranges))]


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
