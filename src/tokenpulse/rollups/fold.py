"""The fold: pending deltas moved into every rollup table, and the busiest minutes kept, in one
statement that removes exactly the deltas it added."""

from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.rollups.grains import GRAINS, MINUTE, Grain
from tokenpulse.tables import ROLLUP_COUNTS, ROLLUP_DIMENSIONS, rollup_pending

FOLD_MAX_ROWS = 20_000
"""Most pending rows one fold moves, so that a backlog is folded in steps that each finish well
inside the statement timeout; the materialiser folds again at once after a full one."""

_PEAK_SOURCE = MINUTE.table_for(("model",))
"""The minute rollup whose rows, as they are after this statement's upsert, feed the peaks."""


def _upserted(table: Table) -> str:
    """The name of the statement's part that upserts `table`, and of the rows it returns."""
    return f"upserted_{table.name}"


def _rollup_upsert(grain: Grain, table: Table) -> str:
    dimensions = [name for name in ROLLUP_DIMENSIONS if name in table.c]
    keys = ", ".join(("bucket_start", *dimensions))
    positions = ", ".join(str(position) for position in range(1, len(dimensions) + 2))
    counts = ", ".join(ROLLUP_COUNTS)
    additions = [f"{c} = {table.name}.{c} + excluded.{c}" for c in ROLLUP_COUNTS]
    bucket = (
        "bucket_start" if grain is MINUTE else f"date_trunc('{grain.name}', bucket_start, 'UTC')"
    )
    sums = f"""
        SELECT {bucket} AS bucket_start, {", ".join(dimensions)},
               {", ".join(f"sum({c})::int8 AS {c}" for c in ROLLUP_COUNTS)}
        FROM moved
        GROUP BY {positions}"""
    columns = f"{keys}, {counts}"
    returning = ""
    if table is _PEAK_SOURCE:
        returning = f"RETURNING {keys}, input_tokens + output_tokens AS tokens"
    if "peak_minute" in table.c:
        columns += ", peak_minute, peak_minute_tokens"
        sums = _with_peaks(grain, dimensions, sums, keys=keys, positions=positions)
        additions += _peak_merge(table.name)
    # Sorted by key: one folder runs at a time, but a fold and a migration or an operator's
    # statement then still take row locks in one order.
    return f"""
    {_upserted(table)} AS (
        INSERT INTO {table.name} ({columns})
        SELECT * FROM ({sums}) AS summed
        ORDER BY {positions}
        ON CONFLICT ({keys}) DO UPDATE SET {", ".join(additions)}
        {returning}
    )"""


def _with_peaks(
    grain: Grain, dimensions: list[str], sums: str, *, keys: str, positions: str
) -> str:
    """`sums` with each bucket's busiest minute among the minutes this statement just upserted.

    A minute's total only grows, so the busiest of the totals as they are after each upsert is
    the busiest minute of the bucket. The minutes are the rows the minute upsert returned: a
    part of the statement may only read parts before it, so changing their order fails at once
    instead of reading the table's older rows.
    """
    return f"""
        SELECT sums.*, peaks.peak_minute, peaks.peak_minute_tokens
        FROM ({sums}) AS sums
        JOIN (
            SELECT DISTINCT ON ({positions})
                   date_trunc('{grain.name}', minute.bucket_start, 'UTC') AS bucket_start,
                   {", ".join(f"minute.{name}" for name in dimensions)},
                   minute.bucket_start AS peak_minute, minute.tokens AS peak_minute_tokens
            FROM {_upserted(_PEAK_SOURCE)} AS minute
            ORDER BY {positions}, minute.tokens DESC, minute.bucket_start
        ) AS peaks USING ({keys})"""


def _peak_merge(name: str) -> list[str]:
    """SET clauses that keep the busier minute of the stored one and the offered one."""
    busier = (
        f"excluded.peak_minute_tokens > {name}.peak_minute_tokens"
        f" OR (excluded.peak_minute_tokens = {name}.peak_minute_tokens"
        f" AND excluded.peak_minute < {name}.peak_minute)"
    )
    return [
        f"peak_minute = CASE WHEN {busier} THEN excluded.peak_minute ELSE {name}.peak_minute END",
        f"peak_minute_tokens = greatest({name}.peak_minute_tokens, excluded.peak_minute_tokens)",
    ]


def _fold_statement() -> str:
    pending = rollup_pending.name
    columns = ", ".join(column.name for column in rollup_pending.c)
    upserts = ",".join(_rollup_upsert(grain, table) for grain in GRAINS for table in grain.tables)
    # Every row the DELETE returns is gone once this commits, and no other row is: rows that
    # flushes commit meanwhile are not in its snapshot and wait for the next fold. Rows are
    # picked by their physical address, which only a delete changes, and one folder runs.
    return f"""
    WITH moved AS (
        DELETE FROM {pending}
        WHERE ctid = ANY(ARRAY(SELECT ctid FROM {pending} LIMIT $1))
        RETURNING {columns}
    ),{upserts}
    SELECT count(*), extract(epoch FROM clock_timestamp() - min(appended_at))::float8 FROM moved
    """


FOLD = _fold_statement()


@dataclass(frozen=True)
class Folded:
    rows: int
    """Pending rows moved into the rollups."""
    lag: float
    """Seconds from the append of the oldest of them to this fold (0 when there were none)."""


async def fold(connection: AsyncConnection, *, max_rows: int = FOLD_MAX_ROWS) -> Folded:
    """Move up to `max_rows` pending deltas into every rollup. The caller owns the transaction:
    the deltas leave pending and reach the rollups when it commits, and not before."""
    result = await connection.exec_driver_sql(FOLD, (max_rows,))
    rows, lag = cast(tuple[int, float | None], tuple(result.one()))
    return Folded(rows, lag or 0.0)
