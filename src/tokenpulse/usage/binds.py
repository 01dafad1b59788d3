"""Statements built once per shape, their values bound when they run.

Building a SQLAlchemy statement costs more CPU than PostgreSQL spends running a small one: a
launch summary spent most of its time building its statements. The statements of summaries and
milestones are therefore built from their shape alone (which grains, which filtered dimensions,
how many parts), and cached; spans, filter values and sums sought are bound parameters.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, DateTime, Table, and_, bindparam

from tokenpulse.usage.cover import Span

SHAPES_CACHED = 512
"""Per kind of statement; the shapes that occur are far fewer."""

INSTANT = DateTime(timezone=True)


def filtered(table: Table, dimensions: Iterable[str]) -> list[ColumnElement[bool]]:
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


def needed(part: int) -> Any:
    """The sum that part `part` seeks, bound as `needed_<part>`."""
    return bindparam(f"needed_{part}", type_=BigInteger)


def needed_values(sums: Iterable[int]) -> dict[str, int]:
    return {f"needed_{part}": value for part, value in enumerate(sums)}
