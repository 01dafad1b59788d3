"""The write transaction: insert new events once, and append exactly their sums to the pending
deltas, which the materialiser folds into the rollups behind it."""

import json
from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.ingest.events import Event
from tokenpulse.tables import NO_API_KEY, ROLLUP_COUNTS, ROLLUP_DIMENSIONS, rollup_pending

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
    ("cache_write_input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("reasoning_tokens", "int8"),
    ("attributes", "jsonb"),
)


def _store_statement() -> str:
    names = ", ".join(name for name, _ in EVENT_COLUMNS)
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(EVENT_COLUMNS, start=1))
    dimensions = ", ".join(ROLLUP_DIMENSIONS)
    counts = ", ".join(ROLLUP_COUNTS)
    tokens = [count for count in ROLLUP_COUNTS if count != "requests"]
    sums = ",\n               ".join(f"sum({count})::int8" for count in tokens)
    # One statement, one round trip: the insert returns only the rows that are new (a conflict on
    # (tenant, event_id) means the event is stored already, or earlier in this same batch), and
    # exactly those are summed into the pending deltas. Nothing here updates a row that another
    # flush could touch: concurrent flushes never wait for each other.
    return f"""
    WITH inserted AS (
        INSERT INTO usage_event ({names})
        SELECT * FROM unnest({arrays})
        ON CONFLICT (tenant, event_id) DO NOTHING
        RETURNING tenant, event_id, project, model, api_key_id, occurred_at,
                  {", ".join(tokens)}
    ),
    appended AS (
        INSERT INTO {rollup_pending.name} (bucket_start, {dimensions}, {counts})
        SELECT date_trunc('minute', occurred_at, 'UTC'), tenant, project, model,
               coalesce(api_key_id, '{NO_API_KEY}'),
               count(*),
               {sums}
        FROM inserted
        GROUP BY 1, 2, 3, 4, 5
    )
    SELECT tenant, event_id FROM inserted
    """


STORE_EVENTS = _store_statement()


STATEMENT_MAX_EVENTS = 1000
"""Most events one statement stores. Encoding a statement's arrays holds the event loop (about
4 ms for 1,000 events), and a flush of 10,000 events in one statement kept every other request
of its worker waiting 40 ms. Fewer would wait less, but each statement sums its own events into
pending deltas: smaller statements, more rows for the materialiser to fold."""


async def store_events(connection: AsyncConnection, events: Sequence[Event]) -> set[EventKey]:
    """Insert `events` and append their sums to the pending deltas; return the keys that were
    new. The caller owns the transaction: nothing is visible, or acknowledged, before it commits.

    Events are stored STATEMENT_MAX_EVENTS at a time, in order: of two with one key, the first
    is stored, whichever statement holds it.
    """
    new: set[EventKey] = set()
    for start in range(0, len(events), STATEMENT_MAX_EVENTS):
        part = events[start : start + STATEMENT_MAX_EVENTS]
        result = await connection.exec_driver_sql(STORE_EVENTS, statement_arguments(part))
        rows: Iterable[EventKey] = result  # type: ignore[assignment]
        new.update((tenant, event_id) for tenant, event_id in rows)
    return new


class EventWriter:
    """Stores batches of events, each in a transaction of its own on `engine`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def store(self, events: Sequence[Event]) -> set[EventKey]:
        """Store `events` durably; return the keys that were new. Returns after COMMIT."""
        async with self._engine.begin() as connection:
            return await store_events(connection, events)


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
        event.cache_write_input_tokens,
        event.output_tokens,
        event.reasoning_tokens,
        None if event.attributes is None else json.dumps(event.attributes),
    )
