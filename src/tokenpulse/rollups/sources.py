"""What a read of rollups reads: the folded rows of a rollup table and the pending deltas beside
them, in one shape, so that every aggregate is exact whether or not the materialiser has run."""

from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Subquery,
    false,
    func,
    literal_column,
    or_,
    select,
    union_all,
)

from tokenpulse.rollups.binds import within
from tokenpulse.rollups.grains import MINUTE, Grain
from tokenpulse.tables import ROLLUP_COUNTS, ROLLUP_DIMENSIONS, rollup_pending


def rollup_rows(grain: Grain, dimensions: Iterable[str], parts: Iterable[int]) -> Subquery:
    """The rows of the smallest rollup table of `grain` that has all of `dimensions`, and the
    pending deltas not yet folded into it, as rows of that table: `bucket_start`, its
    dimensions, the counts. Rows of one bucket and group may appear several times: sum them.

    One statement reads both in one snapshot, and a fold moves deltas from one to the other in
    one transaction, so each delta is counted exactly once. Filters on the subquery reach both
    sides (PostgreSQL pulls a UNION ALL of plain selects up into an append of its parts). The
    pending side is also kept to the spans of `parts` (whole `grain` buckets) by its own minute,
    so that its index passes over the deltas of every other time: a span of days long past
    reads none of them.
    """
    table = grain.table_for(dimensions)
    names = [name for name in ROLLUP_DIMENSIONS if name in table.c]
    folded = select(
        table.c.bucket_start,
        *(table.c[name] for name in names),
        *(table.c[count] for count in ROLLUP_COUNTS),
    )
    pending = select(
        pending_bucket(grain).label("bucket_start"),
        *(rollup_pending.c[name] for name in names),
        *(rollup_pending.c[count] for count in ROLLUP_COUNTS),
    ).where(or_(false(), *(within(rollup_pending.c.bucket_start, part) for part in parts)))
    return union_all(folded, pending).subquery(table.name)


def pending_bucket(grain: Grain) -> ColumnElement[Any]:
    """The start of the `grain` bucket that a pending delta's minute lies in."""
    if grain is MINUTE:
        return rollup_pending.c.bucket_start
    # Constants in the text, not bound values: the statement's plan does not depend on them.
    return func.date_trunc(
        literal_column(f"'{grain.name}'"),
        rollup_pending.c.bucket_start,
        literal_column("'UTC'"),
        type_=DateTime(timezone=True),
    )
