"""Exact totals and cost over any instants: rollups for the whole minutes inside, raw events for
the parts of a minute at either edge."""

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    FromClause,
    Select,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to, floor_to
from tokenpulse.rollups.binds import SHAPES_CACHED, filter_values, span_values
from tokenpulse.rollups.costs import cost_text, price_bounds, priced_join
from tokenpulse.rollups.cover import Span, cover_split
from tokenpulse.rollups.grains import MINUTE, Grain
from tokenpulse.rollups.raw import event_counts
from tokenpulse.rollups.selection import MEASURES, Selection, measures_of
from tokenpulse.rollups.sums import rollup_counts
from tokenpulse.tables import ROLLUP_COUNTS


async def exact_totals(
    connection: AsyncConnection,
    selection: Selection,
    ranges: Sequence[Span],
    *,
    priced: bool = True,
) -> list[dict[str, Any]]:
    """The seven measures and the cost over each [start, end) of `ranges`, for any instants:
    rollups for the whole minutes inside, raw events for the parts of a minute at either edge.
    Two round trips: the prices' boundaries, then the sums; one, answering no cost, when not
    `priced`."""
    assert not selection.group_by, "exact totals are not grouped"
    empty = [{**dict.fromkeys(MEASURES, 0), "cost": None} for _ in ranges]
    if not ranges or selection.matches_nothing:
        return empty
    inside = (
        await price_bounds(
            connection, selection, min(start for start, _ in ranges), max(end for _, end in ranges)
        )
        if priced
        else None
    )
    # Each part: the range it counts toward, and its grain (None: raw events).
    shape: list[tuple[int, Grain | None]] = []
    spans: list[Span] = []
    for index, (start, end) in enumerate(ranges):
        first, last = ceil_to(start, MINUTE.length), floor_to(end, MINUTE.length)
        whole = cover_split(first, last, inside or [])
        edges = [(start, first), (last, end)] if whole else [(start, end)]
        for grain, span in [*whole, *((None, edge) for edge in edges)]:
            if span[0] < span[1]:
                shape.append((index, grain))
                spans.append(span)
    if not shape:
        return empty
    statement = _exact_totals(tuple(shape), selection.dimensions, inside is not None)
    values = {**filter_values(selection.filters), **span_values(spans)}
    found = {
        index: {**measures_of(counts[: len(ROLLUP_COUNTS)]), "cost": cost_text(cost)}
        for index, *counts, cost in await connection.execute(statement, values)
    }
    return [found.get(index) or empty[index] for index in range(len(ranges))]


@lru_cache(SHAPES_CACHED)
def _exact_totals(
    shape: tuple[tuple[int, Grain | None], ...], dimensions: tuple[str, ...], priced: bool
) -> Select[Any]:
    parts = [
        (
            event_counts(dimensions, part, priced=priced)
            if grain is None
            else rollup_counts(grain, dimensions, part, priced=priced)
        ).add_columns(literal(index).label("range"))
        for part, (index, grain) in enumerate(shape)
    ]
    rows = union_all(*parts).subquery("rows")
    columns: list[ColumnElement[Any]] = [
        rows.c.range,
        *(cast(func.sum(rows.c[count]), BigInteger) for count in ROLLUP_COUNTS),
    ]
    source: FromClause = rows
    if priced:
        source, cost = priced_join(rows, dimensions)
        columns.append(cost)
    else:
        columns.append(null())
    return select(*columns).select_from(source).group_by(rows.c.range)
