"""Dashboards' reads on a real streaming replica: a primary and a standby made with pg_basebackup
from the embedded PostgreSQL's binaries, and `tokenpulse serve` reading from the standby while it
keeps up, and from the primary when it falls behind, stops, or a request asks."""

import asyncio
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import UNLIMITED_ENV, bearer
from tests.factories import event
from tests.servers import Server, running_server
from tokenpulse.database import async_url
from tokenpulse.embedded import EmbeddedPostgres, start_embedded_postgres
from tokenpulse.keys.store import create_key
from tokenpulse.scopes import Scope

pytestmark = pytest.mark.process

STANDBY_PORT = 5433
MAX_LAG = 1
HANG = 30.0


@dataclass
class Pair:
    primary: EmbeddedPostgres
    standby_dir: Path
    standby_url: str
    system_user: str

    def pg(self, program: str, *args: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(
            [str(POSTGRES_BIN_PATH / program), *args],
            check=True,
            user=self.system_user,
            capture_output=True,
            timeout=60,
        )

    def start_standby(self) -> None:
        self.pg(
            "pg_ctl",
            "-D",
            str(self.standby_dir),
            "-w",
            "-o",
            f"-h '' -p {STANDBY_PORT} -k {self.standby_dir}",
            "-l",
            str(self.standby_dir / "log"),
            "start",
        )

    def stop_standby(self) -> None:
        self.pg("pg_ctl", "-D", str(self.standby_dir), "-w", "-m", "fast", "stop")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    """A primary and a streaming standby of it, each a server of its own on this machine."""
    with tempfile.TemporaryDirectory(prefix="tokenpulse-replica-") as folder:
        root = Path(folder)
        root.chmod(0o755)
        primary = start_embedded_postgres(root / "primary")
        server: Any = primary._server  # the embedded server, whose binaries and user are used
        standby_dir = root / "standby"
        standby_dir.mkdir(mode=0o700)
        user = pwd.getpwnam(server.system_user) if server.system_user else None
        if user is not None:
            os.chown(standby_dir, user.pw_uid, user.pw_gid)
        socket_dir = make_url(primary.url).query["host"]
        standby_url = make_url(primary.url).set(port=STANDBY_PORT, query={"host": str(standby_dir)})
        pair = Pair(
            primary,
            standby_dir,
            standby_url.render_as_string(hide_password=False),
            server.system_user,
        )
        # A copy of the primary as it is now, set up (-R) to stream the rest from it.
        pair.pg(
            "pg_basebackup",
            "-h",
            str(socket_dir),
            "-U",
            "postgres",
            "-D",
            str(standby_dir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        pair.start_standby()
        try:
            yield pair
        finally:
            # A test may have left the standby stopped.
            with suppress(subprocess.CalledProcessError):
                pair.stop_standby()
            primary.stop()


@pytest.fixture(scope="module")
def serving(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """`tokenpulse serve` on the primary, reading from the standby; and an admin key."""
    env = {
        **UNLIMITED_ENV,
        "TOKENPULSE_DATABASE_URL": pair.primary.url,
        "TOKENPULSE_READ_DATABASE_URL": pair.standby_url,
        "TOKENPULSE_READ_MAX_LAG": str(MAX_LAG),
    }
    with running_server(tmp_path_factory.mktemp("replica"), "--workers", "1", env=env) as server:
        yield server, asyncio.run(_admin_key(pair.primary.url))


async def _admin_key(url: str) -> str:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as connection:
            created = await create_key(connection, name="replica", scope=Scope.ADMIN, tenant=None)
        return created.token
    finally:
        await engine.dispose()


async def _on_standby(pair: Pair, statement: str) -> None:
    engine = create_async_engine(async_url(pair.standby_url))
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def totals(http: httpx.Client, **headers: str) -> tuple[str, int]:
    """Which database answered the last hour's totals, and how many requests they count."""
    answer = http.get("/v1/totals", params={"window": "1h"}, headers=headers)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    return answer.headers["tokenpulse-read-from"], results[0]["requests"] if results else 0


def until(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {HANG} s")


def post(http: httpx.Client, count: int) -> None:
    now = datetime.now(UTC)
    events = [event(at=now - timedelta(seconds=i + 1)) for i in range(count)]
    answer = http.post("/v1/events", json={"events": events})
    assert answer.json()["accepted"] == count, answer.text


def test_reads_go_to_the_replica_once_it_holds_the_writes_and_to_the_primary_when_asked(
    serving: tuple[Server, str],
) -> None:
    server, key = serving
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=HANG) as http:
        before = totals(http, **{"Tokenpulse-Consistency": "primary"})[1]
        post(http, 3)

        # Read-your-writes, asked for: the primary, at once.
        assert totals(http, **{"Tokenpulse-Consistency": "primary"}) == ("primary", before + 3)
        # By default the replica, once it has replayed them: the same answer.
        until(lambda: totals(http) == ("replica", before + 3), "the replica's catching up")
        replica = http.get("/v1/usage", params={"start": _hour_ago(), "bucket": "1m"})
        primary = http.get(
            "/v1/usage",
            params={"start": _hour_ago(), "bucket": "1m"},
            headers={"Tokenpulse-Consistency": "primary"},
        )
        assert replica.headers["tokenpulse-read-from"] == "replica"
        assert replica.json() == primary.json()
        exported = http.get("/v1/events/export", params={"start": _hour_ago()})
        assert exported.headers["tokenpulse-read-from"] == "replica"
        assert len(exported.text.splitlines()) == before + 3
        # The OpenAI-compatible reads, one of which answers a response of its own.
        for path in ("/v1/organization/usage/completions", "/v1/organization/costs"):
            answer = http.get(
                path,
                params={"start_time": int(time.time()) - 3600},
                headers={"OpenAI-Organization": "acme"},
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["tokenpulse-read-from"] == "replica"


def test_a_replica_that_falls_behind_or_stops_is_passed_over_until_it_is_back(
    serving: tuple[Server, str], pair: Pair
) -> None:
    server, key = serving
    with httpx.Client(base_url=server.url, headers=bearer(key), timeout=HANG) as http:
        until(lambda: totals(http)[0] == "replica", "reading from the replica")
        asyncio.run(_on_standby(pair, "SELECT pg_wal_replay_pause()"))
        try:
            before = totals(http, **{"Tokenpulse-Consistency": "primary"})[1]
            post(http, 2)
            # Behind by more than the lag allowed: the primary answers, with the new events.
            until(lambda: totals(http) == ("primary", before + 2), "passing the replica over")
        finally:
            asyncio.run(_on_standby(pair, "SELECT pg_wal_replay_resume()"))
        until(lambda: totals(http) == ("replica", before + 2), "the replica's return")

        pair.stop_standby()
        try:
            # Every read is answered meanwhile; none fails for the replica's sake.
            answers = [totals(http) for _ in range(20)]
            assert set(answers) <= {("replica", before + 2), ("primary", before + 2)}
            until(lambda: totals(http) == ("primary", before + 2), "passing the stopped replica")
        finally:
            pair.start_standby()
        until(lambda: totals(http)[0] == "replica", "the restarted replica's return")
        lag = [
            line
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("tokenpulse_replica_lag_seconds ")
        ]
        assert len(lag) == 1
        assert float(lag[0].split()[1]) <= MAX_LAG
    assert "Traceback" not in server.log()


def test_a_consistency_other_than_primary_is_refused(serving: tuple[Server, str]) -> None:
    server, key = serving
    answer = httpx.get(
        f"{server.url}/v1/totals",
        params={"window": "1h"},
        headers={**bearer(key), "Tokenpulse-Consistency": "strong"},
        timeout=HANG,
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["errors"][0]["field"] == "Tokenpulse-Consistency"


def _hour_ago() -> str:
    return (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:00:00Z")
