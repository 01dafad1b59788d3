"""Raw events are kept a partition a day, each made before any event can need it; and an event
is stored once per tenant for the 35 days of the dedupe window, whatever else it says."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Clock, Ticker, bearer, scratch_database
from tests.factories import event
from tests.gateways import until
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.storage.dedupe import DEDUPE_WINDOW, advance_window, hold_window
from tokenpulse.storage.partitions import PARTITIONS_AHEAD, ensure_partitions, partition_name
from tokenpulse.storage.upkeep import UPKEEP_SECONDS

START = datetime(2027, 3, 1, 23, 58, tzinfo=UTC)
LEAD = Settings.model_fields["max_event_lead"].default
MAX_AGE = Settings.model_fields["max_event_age"].default


@pytest.fixture
async def database(server_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated, its dedupe window opened at START: these tests move
    the window, and make days far from everyone else's."""
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            await connection.exec_driver_sql("UPDATE dedupe_window SET started_at = $1", (START,))
        await engine.dispose()
        yield url


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@asynccontextmanager
async def serving(
    url: str, clock: Clock, monotonic: Ticker, **changes: Any
) -> AsyncIterator[httpx.AsyncClient]:
    engine = create_async_engine(async_url(url))
    async with engine.begin() as connection:
        admin = await create_key(connection, name="admin", scope=Scope.ADMIN, tenant=None)
    await engine.dispose()
    settings = Settings(
        database_url=url,
        rate_limit_ingest=0,
        rate_limit_ingest_events=0,
        rate_limit_read=0,
        rate_limit_admin=0,
        **changes,
    )
    app = create_app(settings, clock=clock, monotonic=monotonic)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://tokenpulse.test",
            headers=bearer(admin.token),
        ) as client,
    ):
        yield client


async def send(client: httpx.AsyncClient, *events: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/v1/events", json={"events": list(events)})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def fetch(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *args)
        return rows
    finally:
        await connection.close()


async def partitions_of(url: str) -> dict[str, str]:
    """The partition each stored event is in, by event id."""
    rows = await fetch(url, "SELECT event_id, tableoid::regclass::text FROM usage_event")
    return {row[0]: row[1] for row in rows}


async def stored(url: str, event_id: str) -> int:
    rows = await fetch(url, "SELECT count(*) FROM usage_event WHERE event_id = $1", event_id)
    count: int = rows[0][0]
    return count


async def requests(client: httpx.AsyncClient, start: datetime = START - MAX_AGE) -> int:
    answer = await client.get(
        "/v1/totals",
        params={"start": format_rfc3339(start), "end": "2030-01-01T00:00:00Z"},
        headers={"Tokenpulse-Consistency": "primary"},
    )
    assert answer.status_code == 200, answer.text
    count: int = answer.json()["results"][0]["requests"]
    return count


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


async def test_an_id_sent_again_saying_anything_else_is_a_duplicate_across_days(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    first = event(event_id="req-1", at=START - timedelta(minutes=1), input_tokens=5)
    again = [
        event(event_id="req-1", at=START - timedelta(days=20), model="m-small"),
        event(event_id="req-1", at=START + LEAD, tenant="acme", project="other"),
        event(event_id="req-1", at=START - MAX_AGE, output_tokens=1),
    ]
    async with serving(database, clock, monotonic) as client:
        assert (await send(client, first))["accepted"] == 1
        answers = [await send(client, each) for each in again]
        # A batch holding one id twice stores the first only.
        both = await send(
            client, event(event_id="req-2", at=START), event(event_id="req-2", at=START - LEAD)
        )
        other_tenant = await send(client, event(event_id="req-1", at=START, tenant="globex"))

        assert [a["duplicates"] for a in answers] == [1, 1, 1]
        assert (both["accepted"], both["duplicates"]) == (1, 1)
        assert other_tenant["accepted"] == 1
        assert await stored(database, "req-1") == 2
        assert await requests(client) == 3


async def test_an_id_sent_again_just_inside_the_window_is_a_duplicate_just_outside_new(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    async with serving(database, clock, monotonic) as client:
        assert (await send(client, event(event_id="req-1", at=START)))["accepted"] == 1

        # Still days that exist, and no upkeep: the window is measured in its own slot.
        later = START + timedelta(days=1)
        clock.now = START + DEDUPE_WINDOW - timedelta(seconds=1)
        inside = await send(client, event(event_id="req-1", at=later))
        clock.now = START + DEDUPE_WINDOW + timedelta(seconds=1)
        outside = await send(client, event(event_id="req-1", at=later))
        once_more = await send(client, event(event_id="req-1", at=later))

    assert (inside["duplicates"], outside["accepted"], once_more["duplicates"]) == (1, 1, 1)
    assert await stored(database, "req-1") == 2


async def slot_of(database: str) -> int:
    slot: int = (await fetch(database, "SELECT slot FROM dedupe_window"))[0][0]
    return slot


async def move_on(database: str, clock: Clock, monotonic: Ticker, to: datetime) -> None:
    """Set the clock to `to` and wait for the materialiser's upkeep to have run there."""
    slot = await slot_of(database)
    clock.now = to
    monotonic.advance(UPKEEP_SECONDS)

    async def moved() -> bool:
        return await slot_of(database) == slot + 1

    await until(moved, "the dedupe window to move on")


async def test_keys_of_the_slot_before_count_for_the_rest_of_their_window(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    received = START + timedelta(days=20)
    async with serving(database, clock, monotonic) as client:
        clock.now = received
        first = event(event_id="req-1", at=START + timedelta(days=1))
        assert (await send(client, first))["accepted"] == 1

        # The upkeep opens slot 2: req-1's key is in the slot before.
        await move_on(database, clock, monotonic, START + DEDUPE_WINDOW)
        later = START + DEDUPE_WINDOW
        clock.now = received + DEDUPE_WINDOW - timedelta(seconds=1)
        inside = await send(client, event(event_id="req-1", at=later))
        clock.now = received + DEDUPE_WINDOW + timedelta(seconds=1)
        outside = await send(client, event(event_id="req-1", at=later))

        # Slot 3 opens, and slot 1 goes, whole: its keys are all past the window.
        await move_on(database, clock, monotonic, START + 2 * DEDUPE_WINDOW)
        kept = {row[0] for row in await fetch(database, "SELECT relname FROM pg_class")}

    assert (inside["duplicates"], outside["accepted"]) == (1, 1)
    assert {"event_key_2", "event_key_3"} <= kept
    assert "event_key_1" not in kept


async def test_the_window_moves_on_only_once_no_store_is_running(database: str) -> None:
    engine = create_async_engine(async_url(database))
    try:
        async with engine.connect() as storing, engine.connect() as upkeep:
            await storing.begin()
            await hold_window(storing)

            moving = asyncio.create_task(move(upkeep, START + DEDUPE_WINDOW))
            await asyncio.sleep(0.5)
            waited = not moving.done()
            await storing.commit()
            opened = await moving
    finally:
        await engine.dispose()

    assert waited
    assert opened == 2


async def move(connection: Any, now: datetime) -> int | None:
    async with connection.begin():
        opened = await advance_window(connection, now=now)
    return None if opened is None else opened.number
