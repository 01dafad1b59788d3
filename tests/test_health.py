"""Operations: liveness and readiness, also while stopping, and whether a commit succeeds."""

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Ticker, bearer, scratch_database
from tests.factories import event
from tests.servers import running_server
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

# Every table a commit of ingest or of readiness writes to.
WRITTEN_TABLES = ("usage_event", "rollup_pending", "readiness_probe")


@pytest.mark.process
def test_readiness_turns_503_at_once_on_sigterm_while_the_worker_drains(
    db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_SHUTDOWN_DRAIN": "3",
        **UNLIMITED_ENV,
    }
    with running_server(tmp_path, env=env) as server:
        assert httpx.get(f"{server.url}/readyz").status_code == 200

        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        draining = httpx.get(f"{server.url}/readyz")
        alive = httpx.get(f"{server.url}/healthz")

        assert draining.status_code == 503
        assert draining.json()["checks"]["shutdown"] == "shutting down"
        assert alive.json() == {"status": "ok"}
        assert server.process.wait(timeout=30) == 0


@asynccontextmanager
async def disk_full(
    database_url: str, tables: tuple[str, ...] = WRITTEN_TABLES
) -> AsyncIterator[None]:
    """Every write to `tables` (by default: of ingest and of readiness) fails as PostgreSQL
    fails it on a full disk."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file: No space left on device' "
            "USING ERRCODE = 'disk_full'; END $$"
        )
        for table in tables:
            await connection.execute(
                f"CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION disk_full()"
            )
        yield
    finally:
        await connection.execute("DROP FUNCTION IF EXISTS disk_full() CASCADE")
        await connection.close()


async def test_readiness_fails_naming_a_full_disk_while_ingest_cannot_commit(
    make_client: ClientFactory, database_url: str, monotonic: Ticker
) -> None:
    async with make_client() as client:
        assert (await client.get("/readyz")).status_code == 200
        async with disk_full(database_url):
            monotonic.advance(2)
            ingest = await client.post("/v1/events", json=event())
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
        monotonic.advance(2)
        stored = await client.post("/v1/events", json=event())
        recovered = await client.get("/readyz")

    assert ingest.status_code == 503
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "shutdown": "ok",
        "database": "cannot commit: the disk is full",
        "schema": "ok",
    }
    assert alive.status_code == 200
    assert recovered.status_code == 200
    assert stored.status_code == 200


async def test_readiness_fails_while_ingest_cannot_commit_though_the_probe_can(
    make_client: ClientFactory, database_url: str, monotonic: Ticker
) -> None:
    async with make_client() as client:
        # Only the events' pages are refused: the probe's one row still fits in its page.
        async with disk_full(database_url, tables=("usage_event",)):
            monotonic.advance(2)
            ingest = await client.post("/v1/events", json=event())
            ready = await client.get("/readyz")
        stored = await client.post("/v1/events", json=event())
        recovered = await client.get("/readyz")

    assert ingest.status_code == 503
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "cannot commit: the disk is full"
    # The next flush that commits makes the worker ready again.
    assert stored.status_code == 200
    assert recovered.status_code == 200


async def test_readiness_and_ingest_answer_503_on_a_read_only_database(server_url: str) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            admin = await create_key(connection, name="admin", scope=Scope.ADMIN, tenant=None)
        await engine.dispose()
        # What a standby, or a database set read-only for maintenance, does to every session.
        name = make_url(url).database
        owner = await asyncpg.connect(url)
        await owner.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await owner.close()

        app = create_app(Settings(database_url=url, rate_limit_ingest=0, rate_limit_admin=0))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://t", headers=bearer(admin.token)
            ) as client:
                ingest = await client.post("/v1/events", json=event())
                ready = await client.get("/readyz")

    assert ingest.status_code == 503, ingest.text
    assert "retry-after" in ingest.headers
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "cannot commit: the database is read-only"


async def test_a_flood_of_readiness_checks_commits_the_probe_row_once_per_interval(
    make_client: ClientFactory, db: AsyncEngine, monotonic: Ticker
) -> None:
    async def probe_row_version() -> str:
        async with db.connect() as connection:
            version = await connection.exec_driver_sql("SELECT xmin::text FROM readiness_probe")
            return str(version.scalar_one())

    async with make_client(token=None) as client:
        assert (await client.get("/readyz")).status_code == 200
        first = await probe_row_version()
        flood = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
        after_flood = await probe_row_version()
        monotonic.advance(2)
        assert (await client.get("/readyz")).status_code == 200
        later = await probe_row_version()

    assert [answer.status_code for answer in flood] == [200] * 50
    assert after_flood == first, "the flood committed the probe row again"
    assert later != first, "a check after the interval commits it anew"
