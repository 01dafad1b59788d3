"""Where a running sum first reaches a sought value: the search under every milestone, run for
several spans at once, in minute rollups or in raw events alike."""

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    CompoundSelect,
    Numeric,
    Row,
    Select,
    String,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.rollups.binds import filter_values, sought, sought_values, span_values
from tokenpulse.rollups.cover import Span


def first_reaching(
    source: Select[Any],
    *,
    order: Sequence[str],
    value: str,
    part: int,
    sums: type[BigInteger | Numeric[Any]] = BigInteger,
) -> Select[Any]:
    """The first row of `source`, in the order of its columns `order`, at which the running sum
    of its column `value` reaches the sum sought by part `part`: its `order` columns, the sum
    before it as `before`, the sum with it as `reached`, and `part` as `search`. `sums`: the
    type of the sums (Numeric for cost)."""
    rows = source.subquery("rows")
    running = select(
        *(rows.c[name] for name in order),
        rows.c[value],
        func.sum(rows.c[value])
        .over(order_by=[_sortable(rows.c[name]) for name in order], rows=(None, 0))
        .label("running"),
    ).subquery("running")
    return (
        select(
            *(running.c[name] for name in order),
            cast(running.c.running - running.c[value], sums).label("before"),
            cast(running.c.running, sums).label("reached"),
            literal(part).label("search"),
        )
        .where(running.c.running >= sought(part, sums))
        .order_by(*(_sortable(running.c[name]) for name in order))
        .limit(1)
    )


def _sortable(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """Text in byte order, as the SPEC orders event ids."""
    return column.collate("C") if isinstance(column.type, String) else column


async def search(
    connection: AsyncConnection,
    statement: CompoundSelect[Any],
    filters: Mapping[str, Sequence[str]],
    searches: Sequence[tuple[Span, int | Decimal]],
) -> list[Row[Any] | None]:
    """Run `statement`, built of one `first_reaching` part per search (span, sought sum); for
    each search, the row it found or None."""
    values = {
        **filter_values(filters),
        **span_values(span for span, _ in searches),
        **sought_values(sum_sought for _, sum_sought in searches),
    }
    found = {row.search: row for row in await connection.execute(statement, values)}
    return [found.get(index) for index in range(len(searches))]
