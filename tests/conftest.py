"""Fixtures: a real PostgreSQL for the whole run, a clean schema per test, and app clients."""

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.keys.store import create_key, revoke_key
from tokenpulse.keys.tokens import parse_token
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.tables import metadata

TEST_DATABASE_VARIABLE = "TOKENPULSE_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    # Settings read TOKENPULSE_* variables: one a developer exported would change what every test
    # sees. Removed before collection, since some test modules build settings as they load.
    for name in [name for name in os.environ if name.startswith("TOKENPULSE_")]:
        if name != TEST_DATABASE_VARIABLE:
            del os.environ[name]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-sql",
        action="store_true",
        help="write tests/sql/ anew from the statements the code generates",
    )
    parser.addoption(
        "--update-screenshot",
        action="store_true",
        help="write docs/dashboard.png anew from the dashboard's browser test",
    )


# The instant tests run at, unless they move it: events are dated around it.
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


class Clock:
    """A clock that tests set by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Ticker:
    """A monotonic clock that moves only when a test moves it: key caches never expire and rate
    limits never refill behind a test's back, however slow the machine."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A PostgreSQL server: TOKENPULSE_TEST_DATABASE_URL, or an embedded one for this run."""
    configured = os.environ.get(TEST_DATABASE_VARIABLE)
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="tokenpulse-test-") as data_dir:
        embedded = start_embedded_postgres(Path(data_dir))
        try:
            yield embedded.url
        finally:
            embedded.stop()


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the test server, dropped afterwards."""
    name = f"tokenpulse_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A database migrated to the newest revision, shared by the run's tests."""
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
        await engine.dispose()
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(database_url))
    yield engine
    await engine.dispose()


async def empty_tables(engine: AsyncEngine, *, keep: tuple[str, ...] = ()) -> None:
    """Every table emptied but those named in `keep`, each locked in the order most of the
    service's own transactions lock them: a detection still running reads the budgets, webhooks
    and launches before anything else, and a fold takes the pending deltas before the rollups.

    No one order suits every transaction (a sender locks deliveries before webhooks, a detection
    after), so a TRUNCATE that deadlocks with one still running is made again.

    The partitioned tables are emptied by DELETE: a test stores a handful of events, and a
    TRUNCATE makes every one of their dozens of partitions and indexes anew, a second a test.
    """
    first = ("budget", "webhook", "launch", "rollup_pending")
    tables = sorted(
        (name for name in metadata.tables if name not in (*keep, *NEVER_EMPTIED, *PARTITIONED)),
        key=lambda name: first.index(name) if name in first else len(first),
    )
    for attempt in range(TRUNCATE_ATTEMPTS):
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"TRUNCATE {', '.join(tables)}")
                for name in PARTITIONED:
                    if name not in keep:
                        await connection.exec_driver_sql(f"DELETE FROM {name}")
            return
        except DBAPIError as exc:
            if attempt + 1 == TRUNCATE_ATTEMPTS or "deadlock" not in str(exc.orig):
                raise


TRUNCATE_ATTEMPTS = 5
NEVER_EMPTIED = ("dedupe_window",)
"""Tables whose rows the service needs, as migrations leave them."""
PARTITIONED = tuple(
    name
    for name, table in metadata.tables.items()
    if table.dialect_options["postgresql"]["partition_by"]
)


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncEngine:
    """The test database, its tables emptied for this test."""
    await empty_tables(engine)
    return engine


async def empty_all_but_keys(engine: AsyncEngine) -> None:
    """Every table but the keys emptied: the examples of a hypothesis test share one `db`
    fixture, and each must start from no events."""
    await empty_tables(engine, keep=("api_key",))


@dataclass
class Keys:
    """Creates API keys in the test database; `admin` is a platform admin key made up front."""

    engine: AsyncEngine
    admin: str

    async def create(
        self, scope: Scope | str, tenant: str | None = None, name: str = "test"
    ) -> str:
        async with self.engine.begin() as connection:
            created = await create_key(connection, name=name, scope=Scope(scope), tenant=tenant)
        return created.token

    async def revoke(self, token: str) -> None:
        parsed = parse_token(token)
        assert parsed is not None
        async with self.engine.begin() as connection:
            assert await revoke_key(connection, parsed[0]) is not None


@pytest.fixture
async def keys(db: AsyncEngine) -> Keys:
    async with db.begin() as connection:
        admin = await create_key(connection, name="test admin", scope=Scope.ADMIN, tenant=None)
    return Keys(db, admin.token)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def monotonic() -> Ticker:
    return Ticker()


# Rate limits are off unless a test turns them on: most tests send requests as fast as they can.
UNLIMITED_ENV = {
    **{f"TOKENPULSE_RATE_LIMIT_{scope.upper()}": "0" for scope in Scope},
    "TOKENPULSE_RATE_LIMIT_INGEST_EVENTS": "0",
}


@pytest.fixture
def settings(database_url: str, db: AsyncEngine) -> Settings:
    return Settings(
        database_url=database_url,
        rate_limit_ingest=0,
        rate_limit_ingest_events=0,
        rate_limit_read=0,
        rate_limit_admin=0,
    )


@pytest.fixture
def make_client(settings: Settings, clock: Clock, monotonic: Ticker, keys: Keys) -> ClientFactory:
    """Open a client on an app built with these settings, changed by keyword arguments, and
    the `clock` and `monotonic` fixtures' time.

    The client sends the platform admin key unless given another `token` (None: no key).
    """

    @asynccontextmanager
    async def open_client(
        token: str | None = keys.admin, **changes: Any
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(
            Settings(**{**settings.model_dump(), **changes}), clock=clock, monotonic=monotonic
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://tokenpulse.test",
                headers=bearer(token) if token is not None else {},
            ) as client:
                yield client

    return open_client


@pytest.fixture
async def client(make_client: ClientFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as client:
        yield client
