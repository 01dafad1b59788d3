"""The write transaction: insert new events once, and add exactly those to every rollup grain."""

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.ingest.events import Event
from tokenpulse.rollups import GRAINS, MINUTE, Grain
from tokenpulse.tables import NO_API_KEY, ROLLUP_COUNTS, ROLLUP_DIMENSIONS

EventKey = tuple[str, str]

EVENT_COLUMNS = (
    ("tenant", "text"),
    ("event_id", "text"),
    ("project", "text"),
    ("model", "text"),
    ("api_key_id", "text"),
    ("occurred_at", "timestamptz"),
    ("input_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("reasoning_tokens", "int8"),
    ("attributes", "jsonb"),
)


_PEAK_SOURCE = MINUTE.table_for(("model",))
"""The minute rollup whose rows, as they are after this statement's upsert, feed the peaks."""


def _upserted(table: Table) -> str:
    """The name of the statement's part that upserts `table`, and of the rows it returns."""
    return f"upserted_{table.name}"


def _rollup_upsert(grain: Grain, table: Table) -> str:
    dimensions = [name for name in ROLLUP_DIMENSIONS if name in table.c]
    keys = ", ".join(("bucket_start", *dimensions))
    values = ", ".join(
        f"coalesce(api_key_id, '{NO_API_KEY}')" if name == "api_key_id" else name
        for name in dimensions
    )
    positions = ", ".join(str(position) for position in range(1, len(dimensions) + 2))
    counts = ", ".join(ROLLUP_COUNTS)
    additions = [f"{c} = {table.name}.{c} + excluded.{c}" for c in ROLLUP_COUNTS]
    sums = f"""
        SELECT date_trunc('{grain.name}', occurred_at, 'UTC') AS bucket_start, {values},
               count(*) AS requests, sum(input_tokens)::int8 AS input_tokens,
               sum(cached_input_tokens)::int8 AS cached_input_tokens,
               sum(output_tokens)::int8 AS output_tokens,
               sum(reasoning_tokens)::int8 AS reasoning_tokens
        FROM inserted
        GROUP BY {positions}"""
    columns = f"{keys}, {counts}"
    returning = ""
    if table is _PEAK_SOURCE:
        returning = f"RETURNING {keys}, input_tokens + output_tokens AS tokens"
    if "peak_minute" in table.c:
        columns += ", peak_minute, peak_minute_tokens"
        sums = _with_peaks(grain, dimensions, sums, keys=keys, positions=positions)
        additions += _peak_merge(table.name)
    # Rows are upserted sorted by their key, and every writer runs this same statement (same
    # plan, same order of tables): all take row locks in one order, so concurrent batches wait
    # for each other but never deadlock.
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
    the busiest minute of the bucket, whichever order concurrent writers commit in. The minutes
    are the rows the minute upsert returned: a part of the statement may only read parts before
    it, so changing their order fails at once instead of reading the table's older rows.
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


def _store_statement() -> str:
    names = ", ".join(name for name, _ in EVENT_COLUMNS)
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(EVENT_COLUMNS, start=1))
    rollups = ",".join(_rollup_upsert(grain, table) for grain in GRAINS for table in grain.tables)
    # One statement, one round trip: the insert returns only the rows that are new (a conflict on
    # (tenant, event_id) means the event is stored already, or earlier in this same batch), and
    # the rollups are fed from exactly those rows.
    return f"""
    WITH inserted AS (
        INSERT INTO usage_event ({names})
        SELECT * FROM unnest({arrays})
        ON CONFLICT (tenant, event_id) DO NOTHING
        RETURNING tenant, event_id, project, model, api_key_id, occurred_at,
                  input_tokens, cached_input_tokens, output_tokens, reasoning_tokens
    ),{rollups}
    SELECT tenant, event_id FROM inserted
    """


STORE_EVENTS = _store_statement()


async def store_events(connection: AsyncConnection, events: Sequence[Event]) -> set[EventKey]:
    """Insert `events` (sorted by key) and update the rollups; return the keys that were new.

    The caller owns the transaction: nothing is visible, and nothing is acknowledged, before it
    commits.
    """
    result = await connection.exec_driver_sql(STORE_EVENTS, statement_arguments(events))
    rows: Iterable[EventKey] = result  # type: ignore[assignment]
    return {(tenant, event_id) for tenant, event_id in rows}


def statement_arguments(events: Sequence[Event]) -> tuple[list[object], ...]:
    """STORE_EVENTS' arguments for `events`: one array per column."""
    columns: tuple[list[object], ...] = tuple([] for _ in EVENT_COLUMNS)
    for event in events:
        for column, value in zip(columns, event_row(event), strict=True):
            column.append(value)
    return columns


def event_row(event: Event) -> tuple[object, ...]:
    return (
        event.tenant,
        event.event_id,
        event.project,
        event.model,
        event.api_key_id,
        event.occurred_at,
        event.input_tokens,
        event.cached_input_tokens,
        event.output_tokens,
        event.reasoning_tokens,
        None if event.attributes is None else json.dumps(event.attributes),
    )
