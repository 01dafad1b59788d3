"""What the tests of the raw events' partitions and of the dedupe window share: a database of
their own, a service on it at a clock they set, and reads straight from PostgreSQL."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Clock, Ticker, bearer, scratch_database
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.storage.dedupe import DEFAULT_WINDOW

START = datetime(2027, 3, 1, 23, 58, tzinfo=UTC)
LEAD = Settings.model_fields["max_event_lead"].default
MAX_AGE = Settings.model_fields["max_event_age"].default
WINDOW = DEFAULT_WINDOW


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
