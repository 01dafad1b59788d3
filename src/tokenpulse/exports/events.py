"""The stored events of a time range, in a fixed order, as NDJSON lines that PostgreSQL builds.

The order is that of the index the raw events already have, `(model, occurred_at, event_id)`,
and then `tenant`: each model's events are a range scan of that index, so an export starts at
once, sorts nothing however many events it spans, and holds a few thousand rows at a time.
Models are visited in order, each found from the one before by one step down the same index.
"""

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, Text, TextClause, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.exports.answers import ExportedEvent
from tokenpulse.rollups.binds import INSTANT, filter_values
from tokenpulse.rollups.selection import Selection
from tokenpulse.tables import usage_event

ROWS_FETCHED = 2_000
"""Rows taken from PostgreSQL at a time: about what an export holds in memory."""

EXPORTED_FIELDS = tuple(ExportedEvent.model_fields)
"""Every field of an exported event, in the order each line has them."""


@dataclass(frozen=True)
class Position:
    """An event's place in the export order: an export resumed from it starts after it."""

    model: str
    occurred_at: datetime
    event_id: str
    tenant: str


@dataclass(frozen=True)
class Lines:
    """Consecutive lines of an export, and the place of the last."""

    text: str
    """Each event as one line of JSON, each line ended by a newline."""
    count: int
    last: Position


async def exported_lines(
    connection: AsyncConnection,
    selection: Selection,
    start: datetime,
    end: datetime,
    *,
    after: Position | None = None,
    limit: int | None = None,
) -> AsyncGenerator[Lines]:
    """The events matching `selection`'s filters with `start <= occurred_at < end`, past
    `after` in the export order, at most `limit` of them, a few thousand lines at a time.

    Run it in one REPEATABLE READ transaction: its statements then read one state of the
    database, so that however long the export takes no event is read twice or missed.
    """
    if selection.matches_nothing or start >= end:
        return
    values: dict[str, Any] = {
        **filter_values(selection.filters),
        "start": start,
        "end": end,
    }
    left = limit
    model = after.model if after is not None else await _next_model(connection, None, selection)
    while model is not None and (left is None or left > 0):
        resuming = after is not None and after.model == model
        statement = _events_of_model(
            tuple(sorted(set(selection.filters) - {"model"})),
            resuming=resuming,
            limited=left is not None,
        )
        bound = {**values, "model": model}
        if left is not None:
            bound["limit"] = left
        if resuming:
            assert after is not None
            bound |= {"at": after.occurred_at, "event_id": after.event_id, "tenant": after.tenant}
        result = await connection.stream(statement, bound)
        async for rows in result.partitions(ROWS_FETCHED):
            occurred_at, event_id, tenant, _ = rows[-1]
            yield Lines(
                "".join(f"{line}\n" for *_, line in rows),
                len(rows),
                Position(model, occurred_at, event_id, tenant),
            )
            if left is not None:
                left -= len(rows)
        model = await _next_model(connection, model, selection)


@lru_cache(64)
def _events_of_model(filters: tuple[str, ...], *, resuming: bool, limited: bool) -> TextClause:
    """One model's events in a range, in order, each with its line; `filters`: the dimensions
    other than the model that are filtered, bound as `<dimension>_values`."""
    fields = ", ".join(
        _UTC_TEXT.format(column="event.occurred_at") + " AS occurred_at"
        if name == "occurred_at"
        else f"event.{name}"
        for name in EXPORTED_FIELDS
    )
    conditions = [
        "event.model = :model",
        "event.occurred_at >= :start",
        "event.occurred_at < :end",
        *(f"event.{name} = ANY(:{name}_values)" for name in filters),
    ]
    if resuming:
        # A row comparison whose leading pair the index ranges over; the tenant breaks ties.
        conditions.append(
            "(event.occurred_at, event.event_id, event.tenant) > (:at, :event_id, :tenant)"
        )
    statement = text(
        f"""
        SELECT event.occurred_at, event.event_id, event.tenant, row_to_json(line)::text
        FROM {usage_event.name} AS event
        CROSS JOIN LATERAL (SELECT {fields}) AS line
        WHERE {" AND ".join(conditions)}
        ORDER BY event.occurred_at, event.event_id, event.tenant
        {"LIMIT :limit" if limited else ""}
        """
    ).bindparams(
        bindparam("start", type_=INSTANT),
        bindparam("end", type_=INSTANT),
        *(bindparam(f"{name}_values", type_=ARRAY(Text)) for name in filters),
        *([bindparam("at", type_=INSTANT)] if resuming else []),
    )
    return statement


_UTC_TEXT = """to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
"""An instant as RFC 3339 in UTC, to the microsecond, as PostgreSQL writes it."""


async def _next_model(
    connection: AsyncConnection, model: str | None, selection: Selection
) -> str | None:
    """The first model after `model` (None: the first of all), in PostgreSQL's order, that any
    stored event names, or, if `selection` filters models, that it allows."""
    names: ColumnElement[str] = usage_event.c.model
    if (allowed := selection.filters.get("model")) is not None:
        # Ordered as the column is, whatever Python's order of the names would be.
        listed = bindparam("allowed", list(allowed), type_=ARRAY(Text))
        names = func.unnest(listed).column_valued("name")
    statement = select(func.min(names))
    if model is not None:
        statement = statement.where(names > model)
    found: str | None = await connection.scalar(statement)
    return found
