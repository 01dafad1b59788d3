"""What partitioned raw events and the dedupe window cost: stores, bytes, and the migration.

    .venv/bin/python bench/partitions.py            # 1M events (about 6 minutes)
    .venv/bin/python bench/partitions.py --tiny     # seconds: that it still runs

1. The store statement, 1,000-event batches from 2 connections into a fresh database, beside
   two parallel COPY streams of the same rows into a table like usage_event and of their keys
   into one like event_key (what a store writes, without the statement).
2. Bytes per event of each table (partitions summed into their table) once the events are
   loaded through the store statement and folded, and of the database.
3. The upgrade to partitions (migration 0014) of a database holding the same number of events
   in the table of before: how long writers and readers wait for it.
"""

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from alembic import command
from breakdown import COPY_TABLES, copy_stored
from dataset import store_and_fold, thirty_days
from run import fresh_database, on_a_database, stored_bytes
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.ingest.events import Event
from tokenpulse.ingest.writer import store_events
from tokenpulse.migrations import alembic_config, upgrade_to_head
from tokenpulse.storage.dedupe import DEFAULT_WINDOW
from tokenpulse.storage.partitions import ensure_partitions

BATCH = 1000


def batches(count: int, now: datetime) -> list[list[Event]]:
    """`count` batches of live events: 2,000 tenants, 20,000 keys, 8 models, the last day."""
    return [
        [
            Event(
                event_id=f"req-{number}-{index}-{now.timestamp():.0f}",
                occurred_at=now - timedelta(seconds=(number * BATCH + index) % 86_400),
                tenant=f"tenant-{index % 2000}",
                project="default",
                model=f"model-{index % 8}",
                api_key_id=f"key-{(number * BATCH + index) % 20_000}",
                input_tokens=1200,
                cached_input_tokens=100,
                cache_write_input_tokens=0,
                output_tokens=800,
                reasoning_tokens=0,
                attributes=None,
            )
            for index in range(BATCH)
        ]
        for number in range(count)
    ]


async def stores(url: str, count: int) -> tuple[float, float, float]:
    """Events a second through the store statement, its median milliseconds a batch, and
    events a second of COPY of the same rows and keys."""
    engine = create_async_engine(async_url(url), pool_size=2)
    now = datetime.now(UTC)
    work = batches(count, now)
    queue = list(work)
    milliseconds: list[float] = []

    async def writer() -> None:
        while queue:
            events = queue.pop()
            started = time.perf_counter()
            async with engine.begin() as connection:
                await store_events(
                    connection, events, received_at=datetime.now(UTC), window=DEFAULT_WINDOW
                )
            milliseconds.append((time.perf_counter() - started) * 1000)

    async with engine.connect() as connection:
        await ensure_partitions(connection, now=now, behind=timedelta(days=2))
    started = time.perf_counter()
    await asyncio.gather(writer(), writer())
    rate = count * BATCH / (time.perf_counter() - started)
    await engine.dispose()

    copiers = [await asyncpg.connect(url) for _ in range(2)]
    await copiers[0].execute(COPY_TABLES)
    streams = [[e for batch in work[n::2] for e in batch] for n in range(2)]
    started = time.perf_counter()
    await asyncio.gather(*(copy_stored(c, s) for c, s in zip(copiers, streams, strict=True)))
    copy_rate = count * BATCH / (time.perf_counter() - started)
    for copier in copiers:
        await copier.close()
    return rate, statistics.median(milliseconds), copy_rate


async def bytes_per_event(url: str, events: int) -> tuple[float, dict[str, float]]:
    await store_and_fold(
        url, thirty_days(events, end=datetime.now(UTC).replace(second=0, microsecond=0))
    )
    engine = create_async_engine(async_url(url))
    database, tables = await stored_bytes(engine)
    await engine.dispose()
    return database / events, {name: size / events for name, size in tables.items()}


async def migration_seconds(url: str, events: int) -> float:
    """Seconds the upgrade to partitions takes over `events` stored before it: `url`'s database
    is taken back to the migration before, given the events, and upgraded again."""
    engine = create_async_engine(async_url(url))

    def to_0013(sync_connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.downgrade(config, "0013")

    async with engine.begin() as connection:
        await connection.run_sync(to_0013)
        await connection.execute(
            text(
                "INSERT INTO usage_event (tenant, event_id, project, model, api_key_id,"
                " occurred_at, input_tokens, cached_input_tokens, output_tokens,"
                " reasoning_tokens)"
                " SELECT 'tenant-' || (i % 2000), 'req-' || i || '-' || md5(i::text), 'default',"
                " 'model-' || (i % 8), 'key-' || (i % 20000),"
                " now() - (i % 2592000) * interval '1 second', 1200, 100, 800, 0"
                " FROM generate_series(1, :events) AS i"
            ),
            {"events": events},
        )
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql("VACUUM ANALYZE usage_event")
    started = time.perf_counter()
    async with engine.begin() as connection:
        await upgrade_to_head(connection)
    seconds = time.perf_counter() - started
    await engine.dispose()
    return seconds


async def run(server_url: str, events: int, reps: int) -> int:
    rates, copies, medians = [], [], []
    for _ in range(reps):
        async with fresh_database(server_url) as url:
            rate, median_ms, copy_rate = await stores(url, max(events // 10_000, 5))
        rates.append(rate)
        copies.append(copy_rate)
        medians.append(median_ms)
    rate, copy_rate = statistics.median(rates), statistics.median(copies)
    print(f"1. store statement: {rate:,.0f} events/s, {statistics.median(medians):.1f} ms a batch")
    print(
        f"   COPY of the same rows and keys: {copy_rate:,.0f} events/s ({rate / copy_rate:.2f} x)"
    )
    async with fresh_database(server_url) as url:
        database, tables = await bytes_per_event(url, events)
    print(f"2. bytes per event at {events:,}: {database:,.0f} (the database)")
    for name, size in list(tables.items())[:12]:
        print(f"   {name:<28} {size:8,.1f}")
    seconds = []
    for _ in range(reps):
        async with fresh_database(server_url) as url:
            seconds.append(await migration_seconds(url, events))
    print(
        f"3. the upgrade to partitions over {events:,} events: {statistics.median(seconds):.2f} s"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    events, reps = (20_000, 1) if args.tiny else (args.events, args.reps)
    return on_a_database(lambda server_url: run(server_url, events, reps))


if __name__ == "__main__":
    raise SystemExit(main())
