"""The `tokenpulse` command: serving on an embedded PostgreSQL, migrating, managing keys."""

import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import UNLIMITED_ENV, bearer, scratch_database
from tests.servers import running_server
from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import current_revision, head_revision, upgrade_to_head

KEY = re.compile(r"tp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


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


@pytest.mark.process
def test_a_first_start_on_the_embedded_postgresql_prints_one_admin_key_and_keeps_the_data(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    env = {"TOKENPULSE_DATA_DIR": str(data_dir), **UNLIMITED_ENV}
    event = {
        "event_id": "req-1",
        "occurred_at": format_rfc3339(datetime.now(UTC) - timedelta(minutes=1)),
        "tenant": "acme",
        "model": "m-large",
        "input_tokens": 1200,
        "output_tokens": 800,
    }

    with running_server(tmp_path, env=env) as server:
        printed = KEY.findall(server.output())
        assert len(printed) == 1
        admin = printed[0]
        logged = [json.loads(line) for line in server.log().splitlines()]
        assert [line["key_id"] for line in logged if "key_id" in line] == [admin.split("_")[1]]
        assert KEY.findall(server.log()) == [], "the secret is shown, never logged"
        # Beside the running server, the command joins its database, and leaves it running.
        created = run_cli("keys", "create", "--scope", "ingest", "--tenant", "acme", env=env)
        assert created.returncode == 0, created.stderr
        ingest = created.stdout.strip()
        assert KEY.fullmatch(ingest)

        response = httpx.post(f"{server.url}/v1/events", json=event, headers=bearer(ingest))
        assert response.status_code == 200, response.text
        assert (data_dir / "pgdata" / "postmaster.pid").exists()
        assert server.stop(signal.SIGTERM) == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still runs"

    with running_server(tmp_path, env=env) as server:
        assert KEY.findall(server.output()) == [], "a second start must not print a new key"
        totals = httpx.get(
            f"{server.url}/v1/totals", params={"window": "1h"}, headers=bearer(admin)
        ).json()
        again = httpx.post(f"{server.url}/v1/events", json=event, headers=bearer(admin)).json()

    assert totals["results"][0]["total_tokens"] == 2000
    assert (again["accepted"], again["duplicates"]) == (0, 1)


@pytest.mark.process
async def test_keys_commands_create_list_and_revoke_keys_in_the_database(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url}

        created = run_cli("keys", "create", "--scope", "read", "--name", "grafana", env=env)
        listed = run_cli("keys", "list", env=env)

        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert KEY.fullmatch(token), "create prints the secret and nothing else"
        key_id = token.split("_")[1]
        assert listed.returncode == 0, listed.stderr
        assert re.search(rf"^{key_id}\tgrafana\tread\t-\t\S+\t-$", listed.stdout, re.MULTILINE)
        assert token.split("_", 2)[2] not in listed.stdout, "list never shows a secret"

        revoked = run_cli("keys", "revoke", key_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        relisted = run_cli("keys", "list", env=env).stdout
        assert re.search(rf"^{key_id}\tgrafana\tread\t-\t\S+\t\S+Z$", relisted, re.MULTILINE)
        assert run_cli("keys", "revoke", "0000000000000000", env=env).returncode == 1


FORGED = "gw\n0000000000000000\tforged\tadmin\t-\t2026-01-01T00:00:00Z\t-"
"""A key name that, printed raw, would add a row to `keys list`."""


@pytest.mark.process
async def test_keys_create_refuses_a_name_or_tenant_with_control_characters(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url}
        refused = {
            option: run_cli("keys", "create", "--scope", "admin", option, text, env=env)
            for option, text in (("--name", FORGED), ("--tenant", "acme\x1b[2J"))
        }
        listed = run_cli("keys", "list", env=env)

    for option, result in refused.items():
        assert result.returncode == 2
        assert f"{option} must not contain control characters" in result.stderr
        assert result.stdout == ""
    assert listed.stdout.split("\n")[1:] == [""], "no key was created"


@pytest.mark.process
async def test_keys_list_prints_control_characters_stored_in_names_and_tenants_escaped(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        # Stored before such names were refused; the tenant would retitle a terminal window.
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            legacy = await create_key(
                connection, name=FORGED, scope=Scope.READ, tenant="acme\x1b]0;owned\x07"
            )
        await engine.dispose()
        listed = run_cli("keys", "list", env={"TOKENPULSE_DATABASE_URL": url})

    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.removesuffix("\n").split("\n")
    assert len(rows) == 2, "the header and the one key, and no forged row"
    assert "\x1b" not in listed.stdout
    key_id, name, scope, tenant, _, revoked_at = rows[1].split("\t")
    assert (key_id, scope, revoked_at) == (legacy.key.id, "read", "-")
    assert name == r"gw\n0000000000000000\tforged\tadmin\t-\t2026-01-01T00:00:00Z\t-"
    assert tenant == r"acme\x1b]0;owned\x07"


@pytest.mark.process
async def test_migrate_brings_a_database_to_the_newest_migration(server_url: str) -> None:
    async with scratch_database(server_url) as url:
        result = run_cli("migrate", env={"TOKENPULSE_DATABASE_URL": url})

        assert result.returncode == 0, result.stderr
        engine = create_async_engine(async_url(url))
        async with engine.connect() as connection:
            assert await current_revision(connection) == head_revision()
        await engine.dispose()


@pytest.mark.process
def test_invalid_settings_stop_the_command_with_a_message_naming_the_variable() -> None:
    result = run_cli(
        "migrate",
        env={"TOKENPULSE_DATABASE_URL": "mysql://x@localhost/db", "TOKENPULSE_DB_POOL_SIZE": "0"},
    )

    assert result.returncode == 2
    assert "TOKENPULSE_DATABASE_URL: Value error, must be a postgresql:// URL" in result.stderr
    assert "TOKENPULSE_DB_POOL_SIZE" in result.stderr
    assert "Traceback" not in result.stderr
