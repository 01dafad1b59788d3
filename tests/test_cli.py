"""The `tokenpulse` command: serving on an embedded PostgreSQL, migrating, refusing bad settings."""

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import scratch_database
from tests.servers import running_server
from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339
from tokenpulse.migrations import current_revision, head_revision


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", *args],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_serve_without_a_database_url_runs_an_embedded_postgresql_that_keeps_its_data(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = {"TOKENPULSE_DATA_DIR": str(data_dir)}
    event = {
        "event_id": "req-1",
        "occurred_at": format_rfc3339(datetime.now(UTC) - timedelta(minutes=1)),
        "tenant": "acme",
        "model": "m-large",
        "input_tokens": 1200,
        "output_tokens": 800,
    }

    with running_server(tmp_path, env=env) as server:
        response = httpx.post(f"{server.url}/v1/events", json=event)
        assert response.status_code == 200
        assert (data_dir / "pgdata" / "postmaster.pid").exists()
        assert server.stop(signal.SIGTERM) == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still runs"

    with running_server(tmp_path, env=env) as server:
        totals = httpx.get(f"{server.url}/v1/totals", params={"window": "1h"}).json()
        again = httpx.post(f"{server.url}/v1/events", json=event).json()

    assert totals["results"][0]["total_tokens"] == 2000
    assert (again["accepted"], again["duplicates"]) == (0, 1)


async def test_migrate_brings_a_database_to_the_newest_migration(server_url: str) -> None:
    async with scratch_database(server_url) as url:
        result = run_cli("migrate", env={"TOKENPULSE_DATABASE_URL": url})

        assert result.returncode == 0, result.stderr
        engine = create_async_engine(async_url(url))
        async with engine.connect() as connection:
            assert await current_revision(connection) == head_revision()
        await engine.dispose()


def test_invalid_settings_stop_the_command_with_a_message_naming_the_variable() -> None:
    result = run_cli(
        "migrate",
        env={"TOKENPULSE_DATABASE_URL": "mysql://x@localhost/db", "TOKENPULSE_DB_POOL_SIZE": "0"},
    )

    assert result.returncode == 2
    assert "TOKENPULSE_DATABASE_URL: Value error, must be a postgresql:// URL" in result.stderr
    assert "TOKENPULSE_DB_POOL_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
