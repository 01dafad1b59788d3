"""The embedded PostgreSQL under several `serve` processes: it runs while any of them is left,
and comes back by itself when it dies under one; its write-ahead log sized for a laptop; and
its default data folder, looked for only when it is used."""

import asyncio
import os
import pwd
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import UNLIMITED_ENV, bearer
from tests.data_folders import postmaster_pid, scratch_folder, wait_until
from tests.servers import Server, running_server, start_server, stop_server
from tokenpulse.instants import format_rfc3339
from tokenpulse.settings import Settings

KEY = re.compile(r"tp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder of its own, removed afterwards with any server left running in it."""
    with scratch_folder() as folder:
        yield folder / "data"


def usage_event(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "occurred_at": format_rfc3339(datetime.now(UTC) - timedelta(minutes=1)),
        "tenant": "acme",
        "model": "m-large",
        "input_tokens": 1200,
        "output_tokens": 800,
    }


def is_ready(server: Server) -> bool:
    try:
        return httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.process
def test_a_serve_that_stops_leaves_the_embedded_postgresql_to_the_serve_that_joined_it(
    data_dir: Path, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATA_DIR": str(data_dir), **UNLIMITED_ENV}
    servers: list[Server] = []
    try:
        servers.append(first := start_server(tmp_path, env=env))
        admin = KEY.findall(first.output())[0]
        servers.append(second := start_server(tmp_path, env=env))
        # A user that ends without leaving must not keep the server running for ever.
        servers.append(killed := start_server(tmp_path, env=env))
        killed.process.kill()
        killed.process.wait()

        assert first.stop() == 0
        ready = httpx.get(f"{second.url}/readyz")
        stored = httpx.post(
            f"{second.url}/v1/events", json=usage_event("after-first"), headers=bearer(admin)
        )
        running_with_second = postmaster_pid(data_dir) is not None
        assert second.stop() == 0
    finally:
        for server in servers:
            stop_server(server)

    assert ready.status_code == 200, ready.text
    assert stored.status_code == 200, stored.text
    assert running_with_second
    assert postmaster_pid(data_dir) is None, "the last serve to stop stops PostgreSQL"


@pytest.mark.process
def test_closing_the_terminal_of_serve_stops_it_and_the_embedded_postgresql(
    data_dir: Path, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATA_DIR": str(data_dir), **UNLIMITED_ENV}
    server = start_server(tmp_path, env=env)
    try:
        running = postmaster_pid(data_dir) is not None
        status = server.stop(signal.SIGHUP)
    finally:
        stop_server(server)

    assert running
    assert status == 0, server.output()
    assert postmaster_pid(data_dir) is None, "SIGHUP left the embedded PostgreSQL running"


@pytest.mark.process
def test_serve_starts_the_embedded_postgresql_again_when_it_dies(
    data_dir: Path, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATA_DIR": str(data_dir), **UNLIMITED_ENV}
    server = start_server(tmp_path, env=env)
    try:
        admin = KEY.findall(server.output())[0]
        before = httpx.post(
            f"{server.url}/v1/events", json=usage_event("before"), headers=bearer(admin)
        )
        killed = postmaster_pid(data_dir)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)

        wait_until(lambda: is_ready(server), "/readyz answering 200 after the kill")
        after = httpx.post(
            f"{server.url}/v1/events", json=usage_event("after"), headers=bearer(admin)
        )
        totals = httpx.get(
            f"{server.url}/v1/totals", params={"window": "1h"}, headers=bearer(admin)
        )
        restarted = postmaster_pid(data_dir)
        alive = server.process.poll() is None
        assert server.stop() == 0
    finally:
        stop_server(server)

    assert before.status_code == 200, before.text
    assert alive
    assert restarted not in (None, killed)
    assert after.status_code == 200, after.text
    assert totals.json()["results"][0]["requests"] == 2
    assert "has stopped; starting it again" in server.log()
    assert postmaster_pid(data_dir) is None


WAL_SETTINGS = [
    "max_wal_size",
    "min_wal_size",
    "wal_keep_size",
    "checkpoint_timeout",
    "wal_compression",
]


SMALL_WAL = {
    "max_wal_size": "256MB",
    "min_wal_size": "32MB",
    "wal_keep_size": "0",
    "checkpoint_timeout": "5min",
    # `on` is PostgreSQL's name for its own compression method.
    "wal_compression": "pglz",
}


async def wal_settings(data_dir: Path, *, change_to: str | None = None) -> dict[str, str]:
    """The running server's WAL settings, after changing `max_wal_size` for good if asked."""
    pid_lines = (data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()
    port, socket_dir = pid_lines[3], pid_lines[4]
    connection = await asyncpg.connect(
        f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
    )
    try:
        if change_to is not None:
            await connection.execute(f"ALTER SYSTEM SET max_wal_size = '{change_to}'")
            await connection.execute("SELECT pg_reload_conf()")
        return {name: await connection.fetchval(f"SHOW {name}") for name in WAL_SETTINGS}
    finally:
        await connection.close()


@pytest.mark.process
async def test_the_embedded_postgresql_keeps_a_small_write_ahead_log_even_in_an_older_data_folder(
    data_dir: Path, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATA_DIR": str(data_dir)}
    with running_server(tmp_path, env=env) as server:
        first = await reloaded_wal_settings(data_dir)
        # What a data folder made at PostgreSQL's defaults holds.
        await wal_settings(data_dir, change_to="1GB")
        changed = await reloaded_wal_settings(data_dir, until=lambda found: found != first)
        assert server.stop() == 0
    with running_server(tmp_path, env=env):
        again = await reloaded_wal_settings(data_dir)

    assert first == SMALL_WAL
    assert changed["max_wal_size"] == "1GB"
    assert again == SMALL_WAL


async def reloaded_wal_settings(
    data_dir: Path, until: Callable[[dict[str, str]], bool] = SMALL_WAL.__eq__
) -> dict[str, str]:
    """The WAL settings once `until` holds, or when a reload has had long enough to take effect:
    `pg_reload_conf()` only signals the server, and a connection made at once may predate it."""
    deadline = time.monotonic() + RELOAD_SECONDS
    found = await wal_settings(data_dir)
    while not until(found) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        found = await wal_settings(data_dir)
    return found


RELOAD_SECONDS = 10.0


@pytest.fixture
def no_home_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a container run as an arbitrary user id has: no HOME, and no account for the id."""

    def no_account(uid: int) -> pwd.struct_passwd:
        raise KeyError(uid)

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_account)


@pytest.mark.usefixtures("no_home_folder")
def test_settings_with_a_database_url_need_no_home_folder() -> None:
    settings = Settings(database_url="postgresql://tokenpulse@db/tokenpulse")

    assert settings.data_dir is None


@pytest.mark.usefixtures("no_home_folder")
def test_the_embedded_postgresql_without_a_home_folder_asks_for_a_data_folder() -> None:
    with pytest.raises(ValueError, match="set TOKENPULSE_DATA_DIR"):
        Settings().embedded_data_dir()
