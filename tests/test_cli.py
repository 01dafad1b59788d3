"""The `tokenpulse` command: serving on an embedded PostgreSQL, migrating, managing keys, and
the data folder each of them uses."""

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import UNLIMITED_ENV, bearer, scratch_database
from tests.data_folders import scratch_folder
from tests.servers import child_environment, running_server
from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import current_revision, head_revision, upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

KEY = re.compile(r"tp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def run_cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", *args],
        env=child_environment(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def folder() -> Iterator[Path]:
    """An empty folder for data folders, homes and working directories; any embedded server
    left running in it is stopped, and the folder removed, afterwards."""
    with scratch_folder() as folder:
        yield folder


def a_user_in(folder: Path) -> dict[str, str]:
    """The environment of a user whose home and XDG data folder lie in `folder`, and whose
    default data folder is therefore `folder / "xdg" / "tokenpulse"`."""
    return {"HOME": str(folder / "home"), "XDG_DATA_HOME": str(folder / "xdg")}


def data_dir_lines(log: str) -> list[str]:
    """The messages of the JSON log lines that name a data folder."""
    lines = [json.loads(line) for line in log.splitlines()]
    return [line["message"] for line in lines if "data_dir" in line]


@pytest.mark.process
def test_a_first_start_on_the_embedded_postgresql_prints_one_admin_key_and_keeps_the_data(
    folder: Path, tmp_path: Path
) -> None:
    data_dir = folder / "data"
    env = {"TOKENPULSE_DATA_DIR": str(data_dir), **a_user_in(folder), **UNLIMITED_ENV}
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
        assert data_dir_lines(server.log()) == [f"creating a new embedded database in {data_dir}"]
        # Beside the running server, the command joins its database, and leaves it running.
        created = run_cli("keys", "create", "--scope", "ingest", "--tenant", "acme", env=env)
        assert created.returncode == 0, created.stderr
        ingest = created.stdout.strip()
        assert KEY.fullmatch(ingest)
        assert created.stderr == f"tokenpulse: using the embedded PostgreSQL in {data_dir}\n"

        response = httpx.post(f"{server.url}/v1/events", json=event, headers=bearer(ingest))
        assert response.status_code == 200, response.text
        assert (data_dir / "pgdata" / "postmaster.pid").exists()
        assert server.stop(signal.SIGTERM) == 0
    assert not (data_dir / "pgdata" / "postmaster.pid").exists(), "PostgreSQL still runs"

    with running_server(tmp_path, env=env) as server:
        assert KEY.findall(server.output()) == [], "a second start must not print a new key"
        assert data_dir_lines(server.log()) == [f"using the embedded PostgreSQL in {data_dir}"]
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


@pytest.mark.process
def test_an_accepted_window_wider_than_the_days_kept_is_refused_at_start() -> None:
    result = run_cli(
        "migrate",
        env={"TOKENPULSE_MAX_EVENT_AGE": "P401D", "TOKENPULSE_MAX_EVENT_LEAD": "P8D"},
    )

    assert result.returncode == 2
    assert "TOKENPULSE_MAX_EVENT_AGE: Value error, must be at most 400 days" in result.stderr
    assert "TOKENPULSE_MAX_EVENT_LEAD: Value error, must be at most 7 days" in result.stderr


@pytest.mark.process
def test_commands_run_from_different_folders_use_one_embedded_database_and_name_its_folder(
    folder: Path,
) -> None:
    env = a_user_in(folder)
    data_dir = folder / "xdg" / "tokenpulse"
    project, elsewhere = folder / "project", folder / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()

    first = run_cli("migrate", env=env, cwd=project)
    again = run_cli("migrate", env=env, cwd=elsewhere)
    created = run_cli("keys", "create", "--scope", "read", env=env, cwd=elsewhere)
    listed = run_cli("keys", "list", env=env, cwd=project)

    assert first.returncode == 0, first.stderr
    assert data_dir_lines(first.stderr) == [f"creating a new embedded database in {data_dir}"]
    assert again.returncode == 0, again.stderr
    assert data_dir_lines(again.stderr) == [f"using the embedded PostgreSQL in {data_dir}"]
    assert created.returncode == 0, created.stderr
    assert created.stderr == f"tokenpulse: using the embedded PostgreSQL in {data_dir}\n"
    key_id = created.stdout.strip().split("_")[1]
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{key_id}\t", listed.stdout, re.MULTILINE), "one database for both"
    assert listed.stderr == f"tokenpulse: using the embedded PostgreSQL in {data_dir}\n"
    assert sorted(path.name for path in folder.iterdir()) == ["elsewhere", "project", "xdg"]
    assert [*project.iterdir(), *elsewhere.iterdir()] == [], "nothing in the working folders"


@pytest.mark.parametrize(
    "command",
    [
        ("keys", "create", "--scope", "ingest"),
        ("keys", "list"),
        ("keys", "revoke", "0000000000000000"),
        ("launches", "list"),
    ],
    ids=" ".join,
)
@pytest.mark.process
def test_keys_and_launches_refuse_a_data_folder_with_no_database_rather_than_start_an_empty_one(
    folder: Path, command: tuple[str, ...]
) -> None:
    data_dir = folder / "data"

    result = run_cli(*command, env={"TOKENPULSE_DATA_DIR": str(data_dir), **a_user_in(folder)})

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"tokenpulse: there is no embedded database in {data_dir}: start one with "
        "`tokenpulse serve` or `tokenpulse migrate`, or set TOKENPULSE_DATA_DIR to the folder of "
        "the one you mean\n"
    )
    assert list(folder.iterdir()) == [], "no data folder was made"


@pytest.mark.process
def test_a_database_in_the_old_default_folder_is_not_passed_over_for_a_new_one(
    folder: Path,
) -> None:
    project = folder / "project"
    project.mkdir()
    old = project / ".tokenpulse"
    data_dir = folder / "xdg" / "tokenpulse"
    env = a_user_in(folder)

    # A relative TOKENPULSE_DATA_DIR is taken from the directory the command runs in.
    made = run_cli("migrate", env={**env, "TOKENPULSE_DATA_DIR": ".tokenpulse"}, cwd=project)
    refused = {
        command: run_cli(command, *args, env=env, cwd=project)
        for command, *args in (("serve", "--port", "0"), ("migrate",), ("keys", "list"))
    }

    assert made.returncode == 0, made.stderr
    assert data_dir_lines(made.stderr) == [f"creating a new embedded database in {old}"]
    for command, result in refused.items():
        assert (command, result.returncode) == (command, 1)
        assert result.stderr == (
            f"tokenpulse: there is no embedded database in {data_dir}, but there is one in "
            f"{old}, where earlier versions kept it: set TOKENPULSE_DATA_DIR={old} to use it, or "
            f"move that folder to {data_dir}\n"
        )
    assert not data_dir.exists()


def test_the_data_folder_is_in_the_xdg_data_home_whichever_directory_a_command_runs_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TOKENPULSE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    monkeypatch.chdir(tmp_path)
    here = Settings().embedded_data_dir()
    monkeypatch.chdir(elsewhere)
    there = Settings().embedded_data_dir()

    assert here == there == tmp_path.resolve() / "xdg" / "tokenpulse"


@pytest.mark.parametrize("xdg_data_home", [None, "", "relative/data"])
def test_without_an_absolute_xdg_data_home_the_data_folder_is_under_the_home_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg_data_home: str | None
) -> None:
    monkeypatch.delenv("TOKENPULSE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg_data_home is None:
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_DATA_HOME", xdg_data_home)
    monkeypatch.chdir(tmp_path)

    home = tmp_path.resolve() / "home"
    assert Settings().embedded_data_dir() == home / ".local" / "share" / "tokenpulse"


@pytest.mark.parametrize(
    ("configured", "expected"),
    [("data", "work/data"), ("../data", "data"), ("~/data", "home/data")],
)
def test_a_configured_data_folder_is_made_absolute_once_from_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, configured: str, expected: str
) -> None:
    monkeypatch.setenv("TOKENPULSE_DATA_DIR", configured)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")

    settings = Settings()
    monkeypatch.chdir(tmp_path)

    assert settings.data_dir == tmp_path.resolve() / expected


@pytest.mark.process
async def test_launches_commands_set_list_and_delete_launches_in_the_database(
    server_url: str,
) -> None:
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url}

        created = run_cli(
            "launches", "set", "m-large", "--at", "2026-11-27T10:00:00+01:00", env=env
        )
        moved = run_cli("launches", "set", "m-large", "--at", "2026-11-27T10:00:00Z", env=env)
        slashed = run_cli("launches", "set", "meta-llama/Llama-3-70b", env=env)
        listed = run_cli("launches", "list", env=env)
        deleted = run_cli("launches", "delete", "m-large", env=env)
        absent = run_cli("launches", "delete", "m-large", env=env)
        relisted = run_cli("launches", "list", env=env)

    assert created.returncode == 0, created.stderr
    assert created.stderr == "launched m-large at 2026-11-27T09:00:00Z\n"
    assert moved.stderr == "moved m-large's launch to 2026-11-27T10:00:00Z\n"
    assert slashed.returncode == 0, slashed.stderr
    rows = listed.stdout.splitlines()
    assert rows[:2] == ["model\tlaunched_at", "m-large\t2026-11-27T10:00:00Z"]
    model, launched_at = rows[2].split("\t")
    assert model == "meta-llama/Llama-3-70b"
    now = datetime.now(UTC)
    assert now - timedelta(minutes=5) < datetime.fromisoformat(launched_at) <= now, "by default now"
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stderr == "deleted m-large's launch, at 2026-11-27T10:00:00Z\n"
    assert (absent.returncode, absent.stderr) == (1, "tokenpulse: no launch is set for m-large\n")
    assert [row.split("\t")[0] for row in relisted.stdout.splitlines()] == [
        "model",
        "meta-llama/Llama-3-70b",
    ]


@pytest.mark.process
async def test_launches_set_refuses_what_the_http_endpoint_refuses(server_url: str) -> None:
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url}
        refused = [
            run_cli("launches", "set", *arguments, env=env)
            for arguments in (
                ("m-large", "--at", "2026-11-27T09:00:00"),
                ("m-large", "--at", "9999-12-31T00:00:00Z"),
                ("m-large", "--at", format_rfc3339(datetime.now(UTC) + timedelta(days=400))),
                ("m" * 129,),
            )
        ]
        listed = run_cli("launches", "list", env=env)

    assert [(result.returncode, result.stderr) for result in refused] == [
        (2, "tokenpulse: --at: must include a UTC offset ('Z' or ±hh:mm)\n"),
        (
            2,
            "tokenpulse: --at: must lie from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z\n",
        ),
        (2, "tokenpulse: --at must not lie more than a year ahead\n"),
        (2, "tokenpulse: the model name must be 1 to 128 characters\n"),
    ]
    assert listed.stdout == "model\tlaunched_at\n", "no launch was set"
