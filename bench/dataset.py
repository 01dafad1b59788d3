"""The aggregate benchmark's data: 30 days of a simulated service, loaded through the write
path's own statement (events, and their sums appended to the pending deltas, in one transaction)
without HTTP in between, then folded into the rollups by the materialiser's own statement."""

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenpulse.database import async_url
from tokenpulse.ingest.events import Event
from tokenpulse.ingest.writer import store_events
from tokenpulse.rollups.fold import fold
from tokenpulse.simulator.launchday import LaunchDay
from tokenpulse.storage.dedupe import DEFAULT_WINDOW
from tokenpulse.storage.partitions import ensure_partitions

MODELS = tuple(f"model-{n}" for n in range(8))
DAYS = 30
LOAD_BATCH = 20_000


def thirty_days(events: int, end: datetime, seed: int = 7) -> LaunchDay:
    """`events` events over the 30 days before `end`: 2,000 tenants, 20,000 keys, 8 models."""
    return LaunchDay(
        start=end - timedelta(days=DAYS),
        seed=seed,
        models=MODELS,
        events=events,
        duration=timedelta(days=DAYS),
        tenants=2000,
        api_keys=20_000,
    )


def as_event(raw: dict[str, Any]) -> Event:
    return Event(
        tenant=raw["tenant"],
        event_id=raw["event_id"],
        project=raw["project"],
        model=raw["model"],
        api_key_id=raw["api_key_id"],
        occurred_at=datetime.fromisoformat(raw["occurred_at"]),
        input_tokens=raw["input_tokens"],
        cached_input_tokens=raw["cached_input_tokens"],
        cache_write_input_tokens=raw["cache_write_input_tokens"],
        output_tokens=raw["output_tokens"],
        reasoning_tokens=raw["reasoning_tokens"],
        attributes=None,
    )


def _batches(day: LaunchDay) -> Iterator[list[Event]]:
    for batch in day.batches(LOAD_BATCH):
        events = [as_event(raw) for raw in batch]
        events.sort(key=lambda event: (event.tenant, event.event_id))
        yield events


async def load(engine: AsyncEngine, day: LaunchDay, writers: int = 2) -> float:
    """Store the whole day with `writers` concurrent transactions; the seconds it took."""
    async with engine.connect() as connection:
        end = day.start + day.duration
        await ensure_partitions(connection, now=end, behind=day.duration)
    batches = _batches(day)
    lock = asyncio.Lock()

    async def writer() -> None:
        while True:
            async with lock:
                batch = next(batches, None)
            if batch is None:
                return
            async with engine.begin() as connection:
                await store_events(
                    connection, batch, received_at=datetime.now(UTC), window=DEFAULT_WINDOW
                )

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - started


async def fold_all(engine: AsyncEngine) -> tuple[int, float]:
    """Fold every pending delta into the rollups, in the materialiser's steps, until none is
    left; the rows folded and the seconds it took."""
    folded_rows = 0
    started = time.perf_counter()
    while True:
        async with engine.begin() as connection:
            folded = await fold(connection)
        if not folded.rows:
            return folded_rows, time.perf_counter() - started
        folded_rows += folded.rows


async def settle(engine: AsyncEngine) -> None:
    """What autovacuum does a little after a bulk load: statistics, and the visibility map that
    lets index-only scans skip the table (and the pending rows the fold left dead, gone). Then
    the load's dirty pages are written out, so that the queries do not race the checkpointer
    writing them."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM (ANALYZE)")
        await autocommit.exec_driver_sql("CHECKPOINT")


async def store_and_fold(url: str, day: LaunchDay) -> tuple[float, int, float]:
    """Store the day in the database at `url`, fold it and settle it: the seconds the load took,
    the pending rows folded, and the seconds the fold took."""
    engine = create_async_engine(async_url(url), pool_size=2)
    try:
        load_seconds = await load(engine, day)
        folded_rows, fold_seconds = await fold_all(engine)
        await settle(engine)
    finally:
        await engine.dispose()
    return load_seconds, folded_rows, fold_seconds
