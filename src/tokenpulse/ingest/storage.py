"""The write transaction: insert new events once, and add exactly those to every rollup grain."""

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.ingest.events import Event
from tokenpulse.rollups import GRAINS, Grain
from tokenpulse.tables import NO_API_KEY, ROLLUP_COUNTS, ROLLUP_DIMENSIONS

EventKey = tuple[str, str]

_EVENT_COLUMNS = (
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


def _rollup_upsert(grain: Grain, table: Table) -> str:
    dimensions = [name for name in ROLLUP_DIMENSIONS if name in table.c]
    keys = ", ".join(("bucket_start", *dimensions))
    values = ", ".join(
        f"coalesce(api_key_id, '{NO_API_KEY}')" if name == "api_key_id" else name
        for name in dimensions
    )
    positions = ", ".join(str(position) for position in range(1, len(dimensions) + 2))
    counts = ", ".join(ROLLUP_COUNTS)
    additions = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in ROLLUP_COUNTS)
    # Rows are upserted sorted by their key, and every writer runs this same statement (same
    # plan, same order of tables): all take row locks in one order, so concurrent batches wait
    # for each other but never deadlock.
    return f"""
    {table.name} AS (
        INSERT INTO {table.name} ({keys}, {counts})
        SELECT date_trunc('{grain.name}', occurred_at, 'UTC'), {values},
               count(*), sum(input_tokens)::int8, sum(cached_input_tokens)::int8,
               sum(output_tokens)::int8, sum(reasoning_tokens)::int8
        FROM inserted
        GROUP BY {positions}
        ORDER BY {positions}
        ON CONFLICT ({keys}) DO UPDATE SET {additions}
    )"""


def _store_statement() -> str:
    names = ", ".join(name for name, _ in _EVENT_COLUMNS)
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_EVENT_COLUMNS, start=1))
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
    columns: list[list[object]] = [[] for _ in _EVENT_COLUMNS]
    for event in events:
        for column, value in zip(columns, _row(event), strict=True):
            column.append(value)
    result = await connection.exec_driver_sql(STORE_EVENTS, tuple(columns))
    rows: Iterable[EventKey] = result  # type: ignore[assignment]
    return {(tenant, event_id) for tenant, event_id in rows}


def _row(event: Event) -> tuple[object, ...]:
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
