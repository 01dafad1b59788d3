"""The write transaction: insert new events once, and append exactly their sums to the pending
deltas, which the materialiser folds into the rollups behind it."""

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.clock import Clock
from tokenpulse.ingest.events import Event
from tokenpulse.storage.dedupe import hold_window
from tokenpulse.storage.partitions import BEFORE_THE_DAYS, lacks_partition, make_days
from tokenpulse.tables import (
    NO_API_KEY,
    ROLLUP_COUNTS,
    ROLLUP_DIMENSIONS,
    dedupe_window,
    event_key,
    rollup_pending,
    usage_event,
)

log = logging.getLogger(__name__)

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
RECEIVED_AT = f"${len(EVENT_COLUMNS) + 1}::timestamptz"
WINDOW = f"${len(EVENT_COLUMNS) + 2}::interval"


def _store_statement() -> str:
    names = ", ".join(name for name, _ in EVENT_COLUMNS)
    arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(EVENT_COLUMNS, start=1))
    given = ", ".join(f"given.{name}" for name, _ in EVENT_COLUMNS)
    dimensions = ", ".join(ROLLUP_DIMENSIONS)
    counts = ", ".join(ROLLUP_COUNTS)
    tokens = [count for count in ROLLUP_COUNTS if count != "requests"]
    sums = ",\n               ".join(f"sum({count})::int8" for count in tokens)
    slot = f"(SELECT slot FROM {dedupe_window.name})"
    # One statement, one round trip. A key is new unless it was received within the window:
    # in the current slot (the primary key: a conflict with a key stored before, or earlier in
    # this same batch, is a duplicate), in the slot before, or before the events were
    # partitioned. Only the new are stored and summed into the pending deltas, the first of a
    # batch's events with one key. Nothing here updates a row: concurrent flushes wait for each
    # other only to tell which of two with one key came first.
    return f"""
    WITH given AS (
        SELECT DISTINCT ON (tenant, event_id) *
        FROM unnest({arrays}) WITH ORDINALITY AS given({names}, position)
        ORDER BY tenant, event_id, position
    ),
    keyed AS (
        INSERT INTO {event_key.name} (tenant, event_id, slot, received_at)
        SELECT given.tenant, given.event_id, {slot}, {RECEIVED_AT}
        FROM given
        WHERE NOT EXISTS (
                SELECT FROM {event_key.name} AS earlier
                WHERE earlier.slot = {slot} - 1
                  AND earlier.tenant = given.tenant AND earlier.event_id = given.event_id
                  AND earlier.received_at > {RECEIVED_AT} - {WINDOW})
          AND NOT EXISTS (
                SELECT FROM {BEFORE_THE_DAYS} AS earlier
                WHERE earlier.tenant = given.tenant AND earlier.event_id = given.event_id
                  AND earlier.received_at > {RECEIVED_AT} - {WINDOW})
        -- In key order, whatever join the checks became: two flushes that share keys then
        -- wait for each other's in one order, and never deadlock.
        ORDER BY given.tenant, given.event_id
        ON CONFLICT (tenant, event_id, slot) DO NOTHING
        RETURNING tenant, event_id
    ),
    inserted AS (
        INSERT INTO {usage_event.name} ({names}, received_at)
        SELECT {given}, {RECEIVED_AT}
        FROM given JOIN keyed USING (tenant, event_id)
        -- {BEFORE_THE_DAYS}'s primary key: an id sent again past the window, whose event
        -- falls before the days, is there already.
        ON CONFLICT DO NOTHING
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


async def store_events(
    connection: AsyncConnection,
    events: Sequence[Event],
    *,
    received_at: datetime,
    window: timedelta,
) -> set[EventKey]:
    """Insert `events`, received at `received_at`, and append their sums to the pending deltas;
    return the keys that were new within the dedupe `window`. The caller owns the transaction:
    nothing is visible, or acknowledged, before it commits.

    Events are stored STATEMENT_MAX_EVENTS at a time, in order: of two with one key, the first
    is stored, whichever statement holds it.
    """
    new: set[EventKey] = set()
    await hold_window(connection)
    for start in range(0, len(events), STATEMENT_MAX_EVENTS):
        part = events[start : start + STATEMENT_MAX_EVENTS]
        arguments = (*statement_arguments(part), received_at, window)
        result = await connection.exec_driver_sql(STORE_EVENTS, arguments)
        rows: Iterable[EventKey] = result  # type: ignore[assignment]
        new.update((tenant, event_id) for tenant, event_id in rows)
    return new


class EventWriter:
    """Stores batches of events, each in a transaction of its own on `engine`."""

    def __init__(self, engine: AsyncEngine, *, clock: Clock, window: timedelta) -> None:
        self._engine = engine
        self._clock = clock
        self._window = window

    async def store(self, events: Sequence[Event]) -> set[EventKey]:
        """Store `events` durably; return the keys that were new. Returns after COMMIT.

        Days are made ahead of the events; should an event's day lack its partition all the
        same (every materialiser down for a week, the clock moved), it is made here and the
        events are stored again.
        """
        try:
            return await self._store(events)
        except DBAPIError as exc:
            if not lacks_partition(exc):
                raise
        async with self._engine.connect() as connection:
            days = {event.occurred_at.astimezone(UTC).date() for event in events}
            made = await make_days(connection, days)
        if made:
            log.warning("made the partitions %s for events that lacked them", ", ".join(made))
        return await self._store(events)

    async def _store(self, events: Sequence[Event]) -> set[EventKey]:
        async with self._engine.begin() as connection:
            return await store_events(
                connection, events, received_at=self._clock(), window=self._window
            )


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
