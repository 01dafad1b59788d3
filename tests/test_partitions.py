"""Raw events are kept a partition a day, each made before any event can need it."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Clock, Ticker
from tests.factories import event
from tests.gateways import until
from tests.storage import (
    LEAD,
    MAX_AGE,
    START,
    clock,
    database,
    fetch,
    partitions_of,
    send,
    serving,
)
from tokenpulse.database import async_url
from tokenpulse.storage.partitions import PARTITIONS_AHEAD, ensure_partitions, partition_name
from tokenpulse.storage.upkeep import UPKEEP_SECONDS

__all__ = ["clock", "database"]


async def test_an_event_at_either_edge_of_the_accepted_window_finds_its_day(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    # Two minutes before midnight: the newest accepted occurs tomorrow.
    edges = {
        "newest": START + LEAD,
        "oldest": START - MAX_AGE,
        "midnight": datetime(2027, 3, 2, tzinfo=UTC),
        "before-midnight": datetime(2027, 3, 2, tzinfo=UTC) - timedelta(microseconds=1),
    }
    async with serving(database, clock, monotonic) as client:
        answer = await send(client, *(event(event_id=n, at=at) for n, at in edges.items()))

    assert answer["accepted"] == len(edges), answer
    assert await partitions_of(database) == {
        "newest": "usage_event_20270302",
        "oldest": "usage_event_20270125",
        "midnight": "usage_event_20270302",
        "before-midnight": "usage_event_20270301",
    }


async def test_an_event_whose_day_was_not_made_ahead_is_stored_all_the_same(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    async with serving(database, clock, monotonic) as client:
        # The clock set a year on under a running service, with no upkeep since.
        clock.now = START + timedelta(days=365)
        answer = await send(client, event(event_id="unforeseen", at=clock.now))

    assert answer["accepted"] == 1, answer
    assert (await partitions_of(database))["unforeseen"] == "usage_event_20280229"


async def test_days_are_made_a_week_ahead_as_time_passes(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    async with serving(database, clock, monotonic) as client:
        ahead = partition_name((START + LEAD + PARTITIONS_AHEAD).date())
        assert ahead in {row[0] for row in await fetch(database, "SELECT relname FROM pg_class")}

        # Ten days on, the elected materialiser's upkeep makes the days that are now due.
        clock.now = START + timedelta(days=10)
        monotonic.advance(UPKEEP_SECONDS)
        due = partition_name((clock.now + LEAD + PARTITIONS_AHEAD).date())

        async def made() -> bool:
            return bool(await fetch(database, "SELECT FROM pg_class WHERE relname = $1", due))

        await until(made, f"the partition {due}")
        answer = await send(client, event(event_id="later", at=clock.now + LEAD))

    assert answer["accepted"] == 1, answer
    assert (await partitions_of(database))["later"] == "usage_event_20270312"


async def test_instances_making_the_same_days_at_once_make_each_once(database: str) -> None:
    engines = [create_async_engine(async_url(database)) for _ in range(2)]
    later = START + timedelta(days=100)

    async def make(engine: Any) -> list[str]:
        async with engine.connect() as connection:
            made: list[str] = await ensure_partitions(connection, now=later, behind=MAX_AGE)
            return made

    try:
        made = await asyncio.gather(*(make(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()

    days = (later + PARTITIONS_AHEAD).date() - (later - MAX_AGE).date()
    assert sorted(made[0] + made[1]) == sorted(set(made[0]) | set(made[1]))
    assert len(made[0]) + len(made[1]) == days.days + 1
