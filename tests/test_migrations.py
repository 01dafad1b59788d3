"""The migration history is the schema: it builds the tables, and readiness checks it."""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, TextClause, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tests.conftest import bearer, scratch_database
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.instants import floor_to, format_rfc3339
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import (
    SCRIPTS,
    alembic_config,
    current_revision,
    head_revision,
    include_name,
    upgrade_to_head,
)
from tokenpulse.rollups.fold import fold
from tokenpulse.rollups.grains import GRAINS, MINUTE, Grain
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.storage.partitions import days_start
from tokenpulse.tables import metadata

ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"


def test_the_alembic_ini_of_a_checkout_writes_where_the_package_reads_its_migrations() -> None:
    scripts = ScriptDirectory.from_config(Config(ALEMBIC_INI))

    assert Path(scripts.dir) == SCRIPTS
    assert Path(scripts.versions) == SCRIPTS / "versions"
    assert scripts.get_current_head() == head_revision()


@asynccontextmanager
async def app_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_upgrading_an_empty_database_builds_exactly_the_declared_schema(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)

        def differences(sync_connection: Connection) -> list[object]:
            context = MigrationContext.configure(
                sync_connection, opts={"include_name": include_name}
            )
            return list(compare_metadata(context, metadata))

        async with engine.connect() as connection:
            assert await current_revision(connection) == head_revision()
            assert await connection.run_sync(differences) == []
            migrated = await index_definitions(connection)
        await engine.dispose()
    # Alembic compares neither index methods nor included columns: PostgreSQL's own definitions do.
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            declared = await index_definitions(connection)
        await engine.dispose()
    assert migrated == declared


async def index_definitions(connection: AsyncConnection) -> dict[str, str]:
    rows = await connection.exec_driver_sql(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        " AND tablename <> 'alembic_version'"
    )
    return {row.indexname: row.indexdef for row in rows if include_name(row.tablename, "table", {})}


async def test_migrations_downgrade_to_nothing_and_upgrade_again(server_url: str) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))

        def downgrade(sync_connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = sync_connection
            command.downgrade(config, "base")

        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            await connection.run_sync(downgrade)
            assert await current_revision(connection) is None
            await upgrade_to_head(connection)
            assert await current_revision(connection) == head_revision()
        await engine.dispose()


async def test_readiness_fails_naming_the_schema_until_migrations_are_applied(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url, app_client(url) as client:
        behind = await client.get("/readyz")

        assert behind.status_code == 503
        assert behind.json()["checks"]["database"] == "ok"
        assert behind.json()["checks"]["schema"] == (
            f"migration none applied, {head_revision()} is the newest"
        )
        assert (await client.get("/healthz")).status_code == 200

        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
        await engine.dispose()

        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"shutdown": "ok", "database": "ok", "schema": "ok"},
        }


async def test_readiness_fails_when_the_database_is_unreachable_without_showing_its_address() -> (
    None
):
    unreachable = "postgresql://tokenpulse:s3cret-password@127.0.0.1:1/tokenpulse"
    async with app_client(unreachable) as client:
        response = await client.get("/readyz")

        assert response.status_code == 503
        assert response.json()["checks"]["database"] == "unreachable"
        assert "127.0.0.1" not in response.text
        assert "s3cret" not in response.text
        assert (await client.get("/healthz")).json() == {"status": "ok"}


def upgrade_to(revision: str) -> Callable[[Connection], None]:
    def upgrade(sync_connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    return upgrade


async def test_the_rollups_by_fewer_dimensions_start_out_filled_from_the_existing_ones(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to("0003"))
            await connection.exec_driver_sql(
                "INSERT INTO rollup_hour VALUES "
                "('2026-11-27 10:00Z', 'acme', 'default', 'm1', '', 2, 10, 1, 5, 0), "
                "('2026-11-27 10:00Z', 'acme', 'chat', 'm1', 'k1', 3, 20, 2, 6, 1), "
                "('2026-11-27 10:00Z', 'globex', 'default', 'm1', '', 4, 30, 3, 7, 2)"
            )
            await connection.run_sync(upgrade_to("0004"))
            by_model = await connection.exec_driver_sql("SELECT * FROM rollup_hour_model")
            by_tenant = await connection.exec_driver_sql(
                "SELECT tenant, requests, input_tokens FROM rollup_hour_tenant_model ORDER BY 1"
            )
            assert [tuple(row)[1:] for row in by_model] == [("m1", 9, 60, 6, 18, 3)]
            assert [tuple(row) for row in by_tenant] == [("acme", 5, 30), ("globex", 4, 30)]
        await engine.dispose()


async def test_hours_and_days_by_model_start_out_knowing_their_busiest_minute(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to("0005"))
            # Total tokens are input + output: 15, 40 (twice: the earlier wins) and 7.
            await connection.exec_driver_sql(
                "INSERT INTO rollup_minute_model VALUES "
                "('2026-11-27 10:01Z', 'm1', 1, 10, 0, 5, 0), "
                "('2026-11-27 10:07Z', 'm1', 1, 30, 0, 10, 0), "
                "('2026-11-27 11:30Z', 'm1', 1, 20, 0, 20, 0), "
                "('2026-11-27 10:03Z', 'm2', 1, 3, 0, 4, 0)"
            )
            await connection.exec_driver_sql(
                "INSERT INTO rollup_hour_model VALUES "
                "('2026-11-27 10:00Z', 'm1', 2, 40, 0, 15, 0), "
                "('2026-11-27 11:00Z', 'm1', 1, 20, 0, 20, 0), "
                "('2026-11-27 10:00Z', 'm2', 1, 3, 0, 4, 0)"
            )
            await connection.exec_driver_sql(
                "INSERT INTO rollup_day_model VALUES "
                "('2026-11-27 00:00Z', 'm1', 3, 60, 0, 35, 0), "
                "('2026-11-27 00:00Z', 'm2', 1, 3, 0, 4, 0)"
            )
            await connection.run_sync(upgrade_to("0006"))
            peaks = {
                grain: [
                    tuple(row)
                    for row in await connection.exec_driver_sql(
                        "SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'DD HH24:MI'), model,"
                        " to_char(peak_minute AT TIME ZONE 'UTC', 'DD HH24:MI'), peak_minute_tokens"
                        f" FROM rollup_{grain}_model ORDER BY 1, 2"
                    )
                ]
                for grain in ("hour", "day")
            }
        await engine.dispose()
    assert peaks == {
        "hour": [
            ("27 10:00", "m1", "27 10:07", 40),
            ("27 10:00", "m2", "27 10:03", 7),
            ("27 11:00", "m1", "27 11:30", 40),
        ],
        "day": [("27 00:00", "m1", "27 10:07", 40), ("27 00:00", "m2", "27 10:03", 7)],
    }


def rollup_row_before_cache_writes(grain: Grain, table: Table, minute: datetime) -> TextClause:
    """An INSERT of one event's row into `table` as a fold of the previous version wrote it:
    1,000 input tokens (400 cached) and 10 output tokens, in the bucket that holds `minute`."""
    values: dict[str, object] = {
        "bucket_start": floor_to(minute, grain.length),
        "tenant": "acme",
        "project": "default",
        "model": "m1",
        "api_key_id": "",
        "requests": 1,
        "input_tokens": 1000,
        "cached_input_tokens": 400,
        "output_tokens": 10,
        "reasoning_tokens": 0,
        "peak_minute": minute,
        "peak_minute_tokens": 1010,
    }
    columns = [name for name in values if name in table.c]
    statement = text(
        f"INSERT INTO {table.name} ({', '.join(columns)})"
        f" VALUES ({', '.join(f':{name}' for name in columns)})"
    )
    return statement.bindparams(**{name: values[name] for name in columns})


async def test_events_and_deltas_stored_before_cache_writes_were_counted_count_none(
    server_url: str,
) -> None:
    old = floor_to(datetime.now(UTC) - timedelta(minutes=10), MINUTE.length)
    previous_writer_event = text(
        "INSERT INTO usage_event (tenant, event_id, project, model, occurred_at, input_tokens,"
        " cached_input_tokens, output_tokens, reasoning_tokens)"
        " VALUES ('acme', :event_id, 'default', 'm1', :at, :input_tokens, 0, 20, 5)"
    )
    previous_writer_delta = text(
        "INSERT INTO rollup_pending (bucket_start, tenant, project, model, api_key_id, requests,"
        " input_tokens, cached_input_tokens, output_tokens, reasoning_tokens)"
        " VALUES (:at, 'acme', 'default', 'm1', '', 1, :input_tokens, 0, 20, 5)"
    )
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to("0009"))
            # As the previous version stored them: one event folded into every rollup, one
            # whose delta is still pending.
            await connection.execute(
                text(
                    "INSERT INTO usage_event (tenant, event_id, project, model, occurred_at,"
                    " input_tokens, cached_input_tokens, output_tokens, reasoning_tokens)"
                    " VALUES ('acme', 'old-1', 'default', 'm1', :at, 1000, 400, 10, 0)"
                ),
                {"at": old},
            )
            for grain in GRAINS:
                for table in grain.tables:
                    await connection.execute(rollup_row_before_cache_writes(grain, table, old))
            old_2 = {"event_id": "old-2", "at": old, "input_tokens": 2000}
            await connection.execute(previous_writer_event, old_2)
            await connection.execute(previous_writer_delta, old_2)
            await upgrade_to_head(connection)
            # A writer of the previous version, still running, names only the columns it knows.
            old_3 = {"event_id": "old-3", "at": old, "input_tokens": 3000}
            await connection.execute(previous_writer_event, old_3)
            await connection.execute(previous_writer_delta, old_3)
            # This version's fold moves one of the deltas; the other stays pending.
            await fold(connection, max_rows=1)
            stored = await connection.execute(
                text("SELECT cache_write_input_tokens FROM usage_event ORDER BY event_id")
            )
            assert [value for (value,) in stored] == [0, 0, 0]
            admin = await create_key(connection, name="test", scope=Scope.ADMIN, tenant=None)
        await engine.dispose()
        async with app_client(url) as client:
            client.headers.update(bearer(admin.token))
            before = await client.get("/v1/totals", params={"window": "1h"})
            by_tenant = await client.get(
                "/v1/totals", params={"window": "1h", "group_by": "tenant,project,api_key_id"}
            )
            posted = await client.post(
                "/v1/events",
                json={
                    "event_id": "new-1",
                    "occurred_at": format_rfc3339(old + timedelta(seconds=30)),
                    "tenant": "acme",
                    "model": "m1",
                    "input_tokens": 500,
                    "cache_write_input_tokens": 300,
                    "output_tokens": 5,
                },
            )
            series = await client.get(
                "/v1/usage",
                params={
                    "bucket": "1m",
                    "start": format_rfc3339(old),
                    "end": format_rfc3339(old + MINUTE.length),
                    "group_by": "tenant",
                },
            )
            crossing = await client.get(
                "/v1/milestones",
                params={
                    "threshold": 300,
                    "since": format_rfc3339(old),
                    "model": "m1",
                    "metric": "cache_write_input_tokens",
                },
            )

    old_measures = {
        "requests": 3,
        "input_tokens": 6000,
        "cached_input_tokens": 400,
        "cache_write_input_tokens": 0,
        "output_tokens": 50,
        "reasoning_tokens": 10,
        "total_tokens": 6050,
        "cost": None,
    }
    assert before.status_code == 200, before.text
    assert before.json()["results"] == [old_measures]
    assert by_tenant.json()["results"] == [
        {"tenant": "acme", "project": "default", "api_key_id": None, **old_measures}
    ]
    assert posted.status_code == 200, posted.text
    [[minute]] = [data["results"] for data in series.json()["data"]]
    assert minute == {
        "tenant": "acme",
        "requests": 4,
        "input_tokens": 6500,
        "cached_input_tokens": 400,
        "cache_write_input_tokens": 300,
        "output_tokens": 55,
        "reasoning_tokens": 10,
        "total_tokens": 6555,
        "cost": None,
    }
    assert crossing.status_code == 200, crossing.text
    assert (crossing.json()["event_id"], crossing.json()["current"]) == ("new-1", 300)


async def test_events_stored_before_partitioning_stay_stored_once_and_counted(
    server_url: str,
) -> None:
    now = datetime.now(UTC)
    at = floor_to(now - timedelta(minutes=10), MINUTE.length)
    previous_writer = text(
        "INSERT INTO usage_event (tenant, event_id, project, model, occurred_at, input_tokens,"
        " cached_input_tokens, output_tokens, reasoning_tokens)"
        " VALUES ('acme', :event_id, 'default', 'm1', :at, 100, 0, 10, 0)"
        " ON CONFLICT (tenant, event_id) DO NOTHING"
    )
    previous_delta = text(
        "INSERT INTO rollup_pending (bucket_start, tenant, project, model, api_key_id, requests,"
        " input_tokens, cached_input_tokens, output_tokens, reasoning_tokens)"
        " VALUES (:at, 'acme', 'default', 'm1', '', 1, 100, 0, 10, 0)"
    )
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await connection.run_sync(upgrade_to("0013"))
            for event_id in ("old-1", "old-2"):
                await connection.execute(previous_writer, {"event_id": event_id, "at": at})
                await connection.execute(previous_delta, {"at": at})
            await upgrade_to_head(connection)
            first_day = await days_start(connection)
            migrated_by = datetime.now(UTC)
            admin = await create_key(connection, name="test", scope=Scope.ADMIN, tenant=None)
        await engine.dispose()
        async with app_client(url) as client:
            client.headers.update(bearer(admin.token))
            sent_again = await client.post(
                "/v1/events",
                json={
                    "events": [
                        # The same ids, saying another time and other tokens: duplicates.
                        {
                            "event_id": event_id,
                            "occurred_at": format_rfc3339(now - timedelta(days=3)),
                            "tenant": "acme",
                            "model": "m1",
                            "input_tokens": 7,
                            "output_tokens": 7,
                        }
                        for event_id in ("old-1", "old-2")
                    ]
                    + [
                        {
                            "event_id": "new-1",
                            "occurred_at": format_rfc3339(at),
                            "tenant": "acme",
                            "model": "m1",
                            "input_tokens": 100,
                            "output_tokens": 10,
                        }
                    ]
                },
            )
            totals = await client.get("/v1/totals", params={"window": "1h"})

    # The table of the previous version is the partition before the days, past any event in it.
    assert first_day in {day.date() + timedelta(days=2) for day in (now, migrated_by)}
    assert sent_again.json()["duplicates"] == 2, sent_again.text
    assert sent_again.json()["accepted"] == 1
    assert totals.json()["results"][0]["requests"] == 3
    assert totals.json()["results"][0]["input_tokens"] == 300
