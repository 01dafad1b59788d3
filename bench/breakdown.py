"""Where one batch of the write path spends its time, step by step, beside COPY of the same rows.

Each batch of 1,000 events is decoded and validated as a worker does it, stored by the write
path's own statement under EXPLAIN ANALYZE (which runs it and times every part of it: the keys
new within the dedupe window, the insert of their events, and the append of their sums to
rollup_pending), and committed; then the materialiser's fold moves exactly those pending rows
into the nine rollups, under EXPLAIN ANALYZE too, and commits; last, the same events are copied
into bare copies of usage_event and (their keys) of event_key. The parts of each statement are
PostgreSQL's own timings, inflated a little by the timing itself; a part that runs another
inside it (the peaks of hours and days read the minute rows that the minute upsert returns) is
shown without the part it ran.
"""

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.ingest.body import Format
from tokenpulse.ingest.events import Checking, Event, EventRules
from tokenpulse.ingest.validation import validate_body
from tokenpulse.ingest.writer import EVENT_COLUMNS, STORE_EVENTS, event_row, statement_arguments
from tokenpulse.rollups.fold import FOLD, FOLD_MAX_ROWS
from tokenpulse.settings import Settings
from tokenpulse.storage.dedupe import DEFAULT_WINDOW
from tokenpulse.storage.partitions import ensure_partitions

COPY_COLUMNS = [name for name, _ in EVENT_COLUMNS]
COPY_TABLES = (
    "CREATE TABLE copy_target (LIKE usage_event INCLUDING ALL);"
    " CREATE TABLE copy_keys (LIKE event_key INCLUDING ALL)"
)
"""What a store writes, without the statement: a table like usage_event (with its indexes) for
the events, and one like event_key (with its primary key) for their keys."""


async def copy_stored(connection: asyncpg.Connection, events: list[Event]) -> None:
    """COPY `events` into copy_target, and their keys into copy_keys."""
    await connection.copy_records_to_table(
        "copy_target", records=[event_row(event) for event in events], columns=COPY_COLUMNS
    )
    received_at = datetime.now(UTC)
    await connection.copy_records_to_table(
        "copy_keys",
        records=[(event.tenant, event.event_id, 1, received_at) for event in events],
        columns=["tenant", "event_id", "slot", "received_at"],
    )


RULES = EventRules.of(Settings())


async def flush_breakdown(url: str, batches: Iterable[list[dict[str, Any]]]) -> dict[str, float]:
    """Per step, the median milliseconds one batch spent in it, over `batches`. `url`'s database
    must hold no pending rows: each fold is to move exactly the rows its batch appended."""
    steps: dict[str, list[float]] = defaultdict(list)
    engine = create_async_engine(async_url(url))
    async with engine.connect() as made:
        await ensure_partitions(made, now=datetime.now(UTC), behind=RULES.max_age)
    await engine.dispose()
    connection = await asyncpg.connect(url)
    await connection.execute(COPY_TABLES)
    try:
        for raw in batches:
            body = json.dumps({"events": raw}).encode()
            started = time.perf_counter()
            events = _validated(body)
            steps["decode and validate, in the worker"].append(_since(started))

            async with connection.transaction():
                plan = await connection.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {STORE_EVENTS}",
                    *statement_arguments(events),
                    datetime.now(UTC),
                    DEFAULT_WINDOW,
                )
                for part, milliseconds in _parts(json.loads(plan)[0]["Plan"]):
                    steps[FLUSH_PARTS.get(part, part)].append(milliseconds)
                started = time.perf_counter()
            steps["commit (WAL flush)"].append(_since(started))

            async with connection.transaction():
                plan = await connection.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {FOLD}", FOLD_MAX_ROWS
                )
                for part, milliseconds in _parts(json.loads(plan)[0]["Plan"]):
                    label = FOLD_PARTS.get(part, part.replace("upserted_", "upsert "))
                    steps[f"fold: {label}"].append(milliseconds)
                started = time.perf_counter()
            steps["fold: commit"].append(_since(started))

            started = time.perf_counter()
            await copy_stored(connection, events)
            steps["reference: COPY of the same rows and keys"].append(_since(started))
    finally:
        await connection.close()
    return {step: sorted(values)[len(values) // 2] for step, values in steps.items()}


FLUSH_PARTS = {
    "given": "the batch's keys, the first of each",
    "keyed": "record the keys new within the dedupe window",
    "inserted": "insert their events",
    "appended": "append their sums to rollup_pending",
}
FOLD_PARTS = {"moved": "take the same rows from rollup_pending"}


def _validated(body: bytes) -> list[Event]:
    """The body's events as a worker validates a clean body: one pydantic call."""
    validated = validate_body(
        body, Format.JSON, Checking(RULES, datetime.now(UTC), None), max_events=10_000
    )
    assert not validated.rejections, validated.rejections
    events = validated.events
    events.sort(key=lambda event: (event.tenant, event.event_id))
    return events


def _parts(plan: dict[str, Any]) -> Iterable[tuple[str, float]]:
    """Each CTE of the statement, in the statement's order, and the time it took itself."""
    parts = {
        sub["Subplan Name"].removeprefix("CTE "): sub
        for sub in plan.get("Plans", [])
        if sub.get("Subplan Name", "").startswith("CTE ")
    }
    totals = {name: node["Actual Total Time"] for name, node in parts.items()}
    for name, node in parts.items():
        yield name, totals[name] - sum(_ran_inside(node, totals, skip=name))


def _ran_inside(node: dict[str, Any], totals: dict[str, float], *, skip: str) -> Iterable[float]:
    """The times of the other parts that `node` ran inside itself: a part runs when it is first
    read, so a scan of it that took at least as long as the whole part is where it ran."""
    for child in node.get("Plans", []):
        name = child.get("CTE Name")
        if (
            child.get("Node Type") == "CTE Scan"
            and name in totals
            and name != skip
            and child["Actual Total Time"] >= totals[name]
        ):
            yield totals[name]
        else:
            yield from _ran_inside(child, totals, skip=skip)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
