"""Statements built once per shape, their values bound when they run.

Building a SQLAlchemy statement costs more CPU than PostgreSQL spends running a small one: a
launch summary spent most of its time building its statements. Read statements are therefore
built from their shape alone (which grains, which dimensions, how many parts) and cached; spans,
filter values and sought sums are bound parameters.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    BindParameter,
    ColumnElement,
    DateTime,
    FromClause,
    Numeric,
    and_,
    bindparam,
)

from tokenpulse.rollups.cover import Span

SHAPES_CACHED = 512
"""Per kind of statement. A statement of more than CACHED_PARTS parts is built each time."""

CACHED_PARTS = 16
"""A series of local days in a zone whose midnight is not a whole UTC hour reads a span of each
grain per day: statements of as many shapes as such ranges have days are not worth keeping."""

INSTANT = DateTime(timezone=True)


def filtered(table: FromClause, dimensions: Iterable[str]) -> list[ColumnElement[bool]]:
    """Each dimension of `table` in its values, bound as `<dimension>_values`."""
    return [table.c[name].in_(bindparam(f"{name}_values", expanding=True)) for name in dimensions]


def filter_values(filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    return {f"{name}_values": list(values) for name, values in filters.items()}


def within(column: ColumnElement[Any], part: int) -> ColumnElement[bool]:
    """`column` in the span of part `part`, bound as `start_<part>` and `end_<part>`."""
    start = bindparam(f"start_{part}", type_=INSTANT)
    end = bindparam(f"end_{part}", type_=INSTANT)
    return and_(column >= start, column < end)


def span_values(spans: Iterable[Span]) -> dict[str, datetime]:
    values = {}
    for part, (start, end) in enumerate(spans):
        values[f"start_{part}"] = start
        values[f"end_{part}"] = end
    return values


def sought(part: int, sums: type[BigInteger | Numeric[Any]] = BigInteger) -> BindParameter[Any]:
    """The sum that part `part` seeks, of type `sums`, bound as `sought_<part>`."""
    return bindparam(f"sought_{part}", type_=sums)


def sought_values(sums: Iterable[int | Decimal]) -> dict[str, int | Decimal]:
    return {f"sought_{part}": value for part, value in enumerate(sums)}
