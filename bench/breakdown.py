"""Where one batch of the write path spends its time, step by step, beside COPY of the same rows.

Each batch of 1,000 events is decoded and validated as a worker does it, stored by the write
path's own statement under EXPLAIN ANALYZE (which runs it and times every part of it), and
committed; the same rows are then copied into a bare copy of usage_event. The parts of the
statement are PostgreSQL's own timings, inflated a little by the timing itself.
"""

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from tokenpulse.ingest.body import Format, decode_events
from tokenpulse.ingest.events import Event, EventRules, validate_event
from tokenpulse.ingest.writer import EVENT_COLUMNS, STORE_EVENTS, event_row, statement_arguments
from tokenpulse.settings import Settings

COPY_COLUMNS = [name for name, _ in EVENT_COLUMNS]
RULES = EventRules.of(Settings())


async def flush_breakdown(url: str, batches: Iterable[list[dict[str, Any]]]) -> dict[str, float]:
    """Per step, the median milliseconds one batch spent in it, over `batches`."""
    steps: dict[str, list[float]] = defaultdict(list)
    connection = await asyncpg.connect(url)
    await connection.execute("CREATE TABLE copy_target (LIKE usage_event INCLUDING ALL)")
    try:
        for raw in batches:
            body = json.dumps({"events": raw}).encode()
            started = time.perf_counter()
            events = _validated(body)
            steps["decode and validate, in the worker"].append(_since(started))

            async with connection.transaction():
                plan = await connection.fetchval(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) {STORE_EVENTS}", *statement_arguments(events)
                )
                for part, milliseconds in _parts(json.loads(plan)[0]["Plan"]):
                    steps[part].append(milliseconds)
                started = time.perf_counter()
            steps["commit (WAL flush)"].append(_since(started))

            started = time.perf_counter()
            await connection.copy_records_to_table(
                "copy_target",
                records=[event_row(event) for event in events],
                columns=COPY_COLUMNS,
            )
            steps["reference: COPY of the same rows"].append(_since(started))
    finally:
        await connection.close()
    return {step: sorted(values)[len(values) // 2] for step, values in steps.items()}


def _validated(body: bytes) -> list[Event]:
    now = datetime.now(UTC)
    events = []
    for raw in decode_events(body, Format.JSON, max_events=10_000):
        checked = validate_event(raw, key_tenant=None, rules=RULES, now=now)
        assert isinstance(checked, Event), checked
        events.append(checked)
    events.sort(key=lambda event: (event.tenant, event.event_id))
    return events


def _parts(plan: dict[str, Any]) -> Iterable[tuple[str, float]]:
    """Each CTE of the statement (the event insert, then one per rollup table) and its time."""
    for sub in plan.get("Plans", []):
        name = sub.get("Subplan Name", "")
        if name.startswith("CTE "):
            part = name.removeprefix("CTE ")
            label = (
                "insert new events (dedupe)"
                if part == "inserted"
                else part.replace("upserted_", "upsert ")
            )
            yield label, sub["Actual Total Time"]


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
