"""The embedded PostgreSQL under several `serve` processes: it runs while any of them is left,
and comes back by itself when it dies under one."""

import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import UNLIMITED_ENV, bearer
from tests.servers import Server, start_server, stop_server
from tokenpulse.instants import format_rfc3339

KEY = re.compile(r"tp_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
RECOVERY_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder outside pytest's own temporary folders, whose root every pytest run makes
    private again (which would lock the database's system user out of its data); whatever
    server is left running in it is stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="tokenpulse-embedded-") as folder:
        data = Path(folder) / "data"
        try:
            yield data
        finally:
            if (pid := postmaster_pid(data)) is not None:
                os.kill(pid, signal.SIGINT)  # a fast shutdown
                wait_until(lambda: postmaster_pid(data) is None, "the left-over server to stop")


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running in `data_dir`, if one runs."""
    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
        return None
    return pid


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


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
