"""One materialiser per database, whatever happens to the processes that elect it: services of
several workers on one database, their leading worker killed, killed mid-fold, their database
crashed mid-fold, while gateways keep sending; then every acknowledged event counts exactly once
in the totals, in the milestones and in every rollup table.

Who holds the leader lock is read from pg_locks, one consistent look at the lock table at a time;
which worker that is, from the `pid` label of `tokenpulse_materialiser_leader` in /metrics.
"""

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Keys
from tests.faults import (
    CrashablePostgres,
    blocking,
    prepare_database,
    probe_events,
    ready,
    server_env,
)
from tests.gateways import (
    HANG_SECONDS,
    Gateways,
    Load,
    WatchedTransport,
    gateway_client,
    gateways,
    ledger_problems,
    until,
)
from tests.servers import Server, start_server, stop_server
from tokenpulse.metrics import MULTIPROCESS_DIR
from tokenpulse.rollups.materialiser import CAMPAIGN_SECONDS, LEADER_LOCK
from tokenpulse.simulator.launchday import LaunchDay
from tokenpulse.simulator.retries import request_until_answered
from tokenpulse.tables import ROLLUP_COUNTS, ROLLUP_TABLES

WORKERS = "2"
HANDOVER_SECONDS = 5 * CAMPAIGN_SECONDS
"""How soon after its leader is gone another worker must lead: a few campaigns."""
PAUSE_SECONDS = 0.2
"""How long each gateway request waits before it goes while the faults are under way."""
POLL_SECONDS = 0.02
MATERIALISER = "tokenpulse-materialiser"
"""The application_name of the materialiser's sessions."""

# A bigint advisory lock shows in pg_locks as its high and low halves, with objsubid 1.
_LEADER_LOCK_ROWS = (
    "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    f" AND l.classid = {LEADER_LOCK >> 32} AND l.objid = {LEADER_LOCK & 0xFFFFFFFF}"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
LEADER_HOLDERS = (
    "SELECT l.pid, a.application_name FROM pg_locks AS l"
    f" LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE {_LEADER_LOCK_ROWS}"
)
"""The sessions that hold the leader lock. pg_locks alone says who: it is read in one look at
the lock table, pg_stat_activity only names them."""
STALLED_FOLD = (
    "SELECT a.pid FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid"
    f" WHERE {_LEADER_LOCK_ROWS} AND a.application_name = '{MATERIALISER}'"
    " AND a.wait_event_type = 'Lock' AND a.backend_xid IS NOT NULL"
)
"""The leader's session while it waits on a lock with rows of its own already written: a fold
that has deleted its pending deltas and not committed."""


def _sums(table: str, requests: str) -> str:
    counts = [requests, *(f"sum({count})" for count in ROLLUP_COUNTS[1:])]
    columns = ", ".join(f"coalesce({count}, 0)::int8" for count in counts)
    return f"SELECT '{table}', {columns} FROM {table}"


ROLLUP_TABLE_NAMES = [table.name for tables in ROLLUP_TABLES.values() for table in tables]
BALANCE = " UNION ALL ".join(
    [
        _sums("usage_event", "count(*)"),
        _sums("rollup_pending", "sum(requests)"),
        *(_sums(name, "sum(requests)") for name in ROLLUP_TABLE_NAMES),
    ]
)
"""The counts of every event stored, of the pending deltas and of each rollup table, in one
statement: one snapshot."""


@dataclass
class LeaderWatch:
    """The sessions holding the leader lock, as polled while a scenario runs."""

    current: tuple[int, ...] = ()
    """The backend pids of the holders at the latest look."""
    most: int = 0
    """The most sessions seen holding the lock at once."""
    looks: int = 0
    holders: list[int] = field(default_factory=list)
    """Every session that held the lock, in the order they took it."""
    strangers: set[str | None] = field(default_factory=set)
    """The application names of holders other than the materialiser's sessions."""

    def saw(self, rows: Sequence[tuple[int, str | None]]) -> None:
        self.looks += 1
        self.current = tuple(pid for pid, _ in rows)
        self.most = max(self.most, len(rows))
        for pid, name in rows:
            if pid not in self.holders:
                self.holders.append(pid)
            # A session that began after pg_stat_activity's snapshot has no name yet.
            if name not in (MATERIALISER, None):
                self.strangers.add(name)

    @property
    def leader(self) -> int | None:
        return self.current[0] if len(self.current) == 1 else None

    async def handed_over(self, since: int) -> float:
        """Wait until one session other than `since` holds the lock; the seconds it took."""
        started = asyncio.get_running_loop().time()
        await until(lambda: self.leader not in (None, since), f"a leader after session {since}")
        return asyncio.get_running_loop().time() - started


@asynccontextmanager
async def watching_leaders(database_url: str) -> AsyncIterator[LeaderWatch]:
    """Look at who holds the leader lock every POLL_SECONDS until the block ends, again once the
    database is back if it goes down meanwhile."""
    watch = LeaderWatch()
    polling = asyncio.create_task(_poll_leaders(database_url, watch))
    try:
        await until(lambda: watch.looks > 0, "a first look at the leader lock")
        yield watch
    finally:
        polling.cancel()
        await asyncio.wait([polling])


async def _poll_leaders(database_url: str, watch: LeaderWatch) -> None:
    while True:
        try:
            connection = await asyncpg.connect(database_url)
            try:
                while True:
                    watch.saw([tuple(row) for row in await connection.fetch(LEADER_HOLDERS)])
                    await asyncio.sleep(POLL_SECONDS)
            finally:
                connection.terminate()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Leader:
    service: int
    """Which of the services it is a worker of."""
    worker: int
    """The worker's process id."""
    session: int
    """The backend pid of the session that holds the lock."""


async def find_leader(readers: Sequence[httpx.AsyncClient], watch: LeaderWatch) -> Leader:
    """The one worker that leads, once exactly one across the services says it does and exactly
    one session holds the lock (a killed worker's gauge lasts until its supervisor reaps it)."""
    found: list[Leader] = []

    async def one_leads() -> bool:
        leading = [
            (service, pid)
            for service, reader in enumerate(readers)
            for pid, leads in (await leader_gauges(reader)).items()
            if leads == 1
        ]
        if len(leading) != 1 or watch.leader is None:
            return False
        found.append(Leader(*leading[0], session=watch.leader))
        return True

    await until(one_leads, "exactly one worker leading")
    return found[-1]


async def leader_gauges(reader: httpx.AsyncClient) -> dict[int, float]:
    """Each live worker's tokenpulse_materialiser_leader, by process id, from /metrics."""
    scraped = await request_until_answered(reader, "GET", "/metrics", give_up_seconds=HANG_SECONDS)
    return {
        int(sample.labels["pid"]): sample.value
        for family in text_string_to_metric_families(scraped.text)
        if family.name == "tokenpulse_materialiser_leader"
        for sample in family.samples
    }


@asynccontextmanager
async def services(log_dir: Path, env: dict[str, str], count: int) -> AsyncIterator[list[Server]]:
    """`count` services of WORKERS workers each, started together; those in the list when the
    block ends are stopped."""
    started = await asyncio.gather(
        *(
            asyncio.to_thread(start_server, log_dir, "--workers", WORKERS, env=env)
            for _ in range(count)
        ),
        return_exceptions=True,
    )
    running = [server for server in started if isinstance(server, Server)]
    try:
        for failure in started:
            if isinstance(failure, BaseException):
                raise failure
        yield running
    finally:
        await asyncio.gather(*(asyncio.to_thread(stop_server, server) for server in running))


def kill_service(server: Server) -> None:
    """SIGKILL a service's supervisor and every process under it, as a machine's crash would: the
    supervisor is stopped first, so that it starts no worker in their place. The metrics folder
    that the service would have removed as it exited is removed here."""
    supervisor = server.process.pid
    os.kill(supervisor, signal.SIGSTOP)
    processes = [supervisor, *descendants(supervisor)]
    # The supervisor sets the folder after it starts: only its workers have it from the start.
    folders = {folder for pid in processes if (folder := metrics_folder(pid))}
    for pid in processes:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.process.wait()
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def metrics_folder(pid: int) -> str | None:
    """The multiprocess metrics folder in the environment process `pid` started with."""
    with suppress(OSError):
        for variable in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            name, _, value = variable.decode(errors="replace").partition("=")
            if name == MULTIPROCESS_DIR:
                return value
    return None


def descendants(pid: int) -> list[int]:
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [*children, *(grandchild for child in children for grandchild in descendants(child))]


class Balanced(httpx.AsyncBaseTransport):
    """A load balancer in front of services on `ports`: each request goes to the next of them in
    turn, and on to the one after if that refuses the connection (so nothing was sent)."""

    def __init__(self, ports: Sequence[int]) -> None:
        self._ports = list(ports)
        self._turn = 0
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(len(self._ports)):
            self._turn += 1
            request.url = request.url.copy_with(port=self._ports[self._turn % len(self._ports)])
            try:
                return await self._inner.handle_async_request(request)
            except httpx.ConnectError:
                if attempt == len(self._ports) - 1:
                    raise
        raise AssertionError("no service to send to")

    async def aclose(self) -> None:
        await self._inner.aclose()


class Paced(httpx.AsyncBaseTransport):
    """`inner`, each request held back PAUSE_SECONDS until `hurry()`: gateways that keep sending,
    slowly, for as long as a scenario's faults take, and then finish quickly."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self._hurry = asyncio.Event()

    def hurry(self) -> None:
        self._hurry.set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with suppress(TimeoutError):
            async with asyncio.timeout(PAUSE_SECONDS):
                await self._hurry.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Probes:
    """Events of a project of their own, sent beside the gateways' to see folds happen: they
    reach the rollup tables, which alone have the project, only through a fold."""

    day: LaunchDay
    database_url: str
    sent: int = 0

    @cached_property
    def project(self) -> str:
        return str(probe_events(self.day, "")[0]["project"])

    async def send(self, client: httpx.AsyncClient, name: str) -> None:
        events = probe_events(self.day, name)
        answer = await request_until_answered(
            client, "POST", "/v1/events", json={"events": events}, give_up_seconds=HANG_SECONDS
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["accepted"] == len(events), answer.text
        self.sent += len(events)

    async def folded(self) -> None:
        """Wait until every probe sent so far is in the rollups (more, if a fold counts twice)."""
        await until(lambda: self._folded_at_least(self.sent), f"{self.sent} probe events folded")

    async def _folded_at_least(self, events: int) -> bool:
        connection = await asyncpg.connect(self.database_url)
        try:
            folded = await connection.fetchval(
                "SELECT coalesce(sum(requests), 0) FROM rollup_minute WHERE project = $1",
                self.project,
            )
        finally:
            await connection.close()
        return bool(folded >= events)


@asynccontextmanager
async def day_rollups_locked(database_url: str) -> AsyncIterator[None]:
    """Every day-by-model rollup row locked by a transaction of its own until the block ends.

    A fold that adds to one of them waits on it with its transaction open, after its DELETE has
    taken its pending deltas out: each upsert groups the deleted rows, so reads all of them
    before it writes one. The lock ends with the block, or with the database if that goes down.
    """
    async with blocking(database_url) as blocker:
        locked = await blocker.fetch("SELECT 1 FROM rollup_day_model FOR UPDATE")
        assert locked, "no day rollup to lock yet: nothing has been folded"
        yield


async def stalled_fold(database_url: str) -> int:
    """Wait until the leader's fold waits on a lock mid-transaction; its backend pid."""
    stalled: list[int] = []

    async def waiting() -> bool:
        connection = await asyncpg.connect(database_url)
        try:
            stalled.extend(row["pid"] for row in await connection.fetch(STALLED_FOLD))
        finally:
            await connection.close()
        return bool(stalled)

    await until(waiting, "the leader's fold waiting on a lock mid-transaction")
    return stalled[0]


async def pending_rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        rows: int = await connection.fetchval("SELECT count(*) FROM rollup_pending")
    finally:
        await connection.close()
    return rows


async def counts(database_url: str) -> dict[str, tuple[int, ...]]:
    """The counts of BALANCE: requests (events) and each token count, by table."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(BALANCE)
    finally:
        await connection.close()
    return {row[0]: tuple(row[1:]) for row in rows}


async def balance_problems(database_url: str) -> list[str]:
    """Where a rollup table and the pending deltas together do not count every stored event
    exactly once, as of one snapshot."""
    seen = await counts(database_url)
    events, pending = seen["usage_event"], seen["rollup_pending"]
    problems = []
    for name in ROLLUP_TABLE_NAMES:
        together = tuple(map(sum, zip(seen[name], pending, strict=True)))
        if together != events:
            problems.append(f"{name} {seen[name]} + pending {pending} != stored {events}")
    return problems


async def settled_problems(
    database_url: str, reader: httpx.AsyncClient, sent: Sequence[Gateways], probes: Probes
) -> list[str]:
    """Once nothing is sent any more and the materialiser has folded everything: where the
    totals, the milestones, the stored events or any rollup table disagree with the ledgers."""
    await until(lambda: _no_pending(database_url), "every pending delta folded into the rollups")
    problems = []
    for gateway in sent:
        problems += await ledger_problems(reader, database_url, gateway.day, gateway.ledger)
        problems += gateway.unexpected_answers({200, 503})
        # A killed worker drops its connections; a request that waited until it timed out
        # would be a hang.
        problems += gateway.unanswered(
            expected={"ConnectError", "ReadError", "RemoteProtocolError"}
        )
    problems += await balance_problems(database_url)
    acked = sum(gateway.ledger.acked for gateway in sent) + probes.sent
    stored = (await counts(database_url))["usage_event"][0]
    if stored != acked:
        problems.append(f"{stored:,} events stored, {acked:,} acknowledged")
    return problems


async def _no_pending(database_url: str) -> bool:
    return await pending_rows(database_url) == 0


def probe_client(server: Server, key: str) -> httpx.AsyncClient:
    return gateway_client(server.url, key, httpx.AsyncHTTPTransport())


@pytest.mark.process
async def test_two_services_fold_under_one_leader_at_a_time_that_hands_over_when_killed(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    load = Load(events=8_000, seed=71, batch=50, concurrency=4)
    handovers = []
    async with (
        services(tmp_path, server_env(database_url), 2) as running,
        watching_leaders(database_url) as watch,
        probe_client(running[0], keys.admin) as first,
        probe_client(running[1], keys.admin) as second,
    ):
        readers = [first, second]
        pace = Paced(Balanced([server.port for server in running]))
        transport = WatchedTransport(pace)
        async with (
            gateway_client(running[0].url, keys.admin, transport) as client,
            gateways(client, load, transport) as sent,
        ):
            probes = Probes(sent.day, database_url)
            await probes.send(first, "before")
            await probes.folded()

            # The leading worker alone: its supervisor starts another in its place.
            leader = await find_leader(readers, watch)
            os.kill(leader.worker, signal.SIGKILL)
            handovers.append(await watch.handed_over(since=leader.session))
            await probes.send(readers[1 - leader.service], "after-worker")
            await probes.folded()

            # The whole service that leads now: the other one's workers take over.
            leader = await find_leader(readers, watch)
            await asyncio.to_thread(kill_service, running[leader.service])
            handovers.append(await watch.handed_over(since=leader.session))
            survivor = readers[1 - leader.service]
            await probes.send(survivor, "after-service")
            await probes.folded()

            assert not sent.sending.done(), "sending ended before the faults did"
            pace.hurry()
        problems = await settled_problems(database_url, survivor, [sent], probes)

    assert watch.most == 1, f"{watch.most} sessions held the leader lock at once"
    assert len(watch.holders) >= 3, watch.holders
    assert watch.strangers == set()
    assert all(seconds < HANDOVER_SECONDS for seconds in handovers), handovers
    assert problems == []


@pytest.mark.process
async def test_a_leader_killed_mid_fold_again_and_again_leaves_every_event_counted_once(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    load = Load(events=8_000, seed=73, batch=50, concurrency=2)
    handovers = []
    async with (
        services(tmp_path, server_env(database_url), 1) as running,
        watching_leaders(database_url) as watch,
        probe_client(running[0], keys.admin) as probe,
    ):
        pace = Paced(httpx.AsyncHTTPTransport())
        transport = WatchedTransport(pace)
        async with (
            gateway_client(running[0].url, keys.admin, transport) as client,
            gateways(client, load, transport) as sent,
        ):
            probes = Probes(sent.day, database_url)
            await probes.send(probe, "before")
            await probes.folded()
            assert await balance_problems(database_url) == [], "before any kill"
            for kill in range(1, 4):
                async with day_rollups_locked(database_url):
                    await probes.send(probe, f"stalled-{kill}")
                    stalled = await stalled_fold(database_url)
                    leader = await find_leader([probe], watch)
                    assert leader.session == stalled, "the fold that waits is the leader's"
                    os.kill(leader.worker, signal.SIGKILL)
                # The killed worker's session goes on with the fold once the lock is released,
                # and finds no one there to commit it.
                handovers.append(await watch.handed_over(since=leader.session))
                assert await balance_problems(database_url) == [], f"after kill {kill}"
                await probes.folded()
            assert not sent.sending.done(), "sending ended before the faults did"
            pace.hurry()
        problems = await settled_problems(database_url, probe, [sent], probes)

    assert watch.most == 1, f"{watch.most} sessions held the leader lock at once"
    assert all(seconds < HANDOVER_SECONDS for seconds in handovers), handovers
    assert problems == []


@pytest.mark.process
async def test_a_database_crash_mid_fold_leaves_the_materialiser_to_recover_by_itself(
    tmp_path: Path,
) -> None:
    load = Load(events=4_000, seed=74, batch=50, concurrency=2)
    # Not under pytest's own temporary folders: see postgres_restart_scenario.
    with tempfile.TemporaryDirectory(prefix="tokenpulse-faults-") as data_dir:
        postgres = await asyncio.to_thread(CrashablePostgres, Path(data_dir))
        try:
            key = await prepare_database(postgres.url)
            env = server_env(postgres.url, db_connect_timeout="2")
            async with (
                services(tmp_path, env, 1) as running,
                watching_leaders(postgres.url) as watch,
                probe_client(running[0], key) as probe,
            ):
                pace = Paced(httpx.AsyncHTTPTransport())
                transport = WatchedTransport(pace)
                async with (
                    gateway_client(running[0].url, key, transport) as client,
                    gateways(client, load, transport) as sent,
                ):
                    probes = Probes(sent.day, postgres.url)
                    await probes.send(probe, "before")
                    await probes.folded()
                    async with day_rollups_locked(postgres.url):
                        await probes.send(probe, "stalled")
                        stalled = await stalled_fold(postgres.url)
                        await asyncio.to_thread(postgres.crash)
                    await asyncio.to_thread(postgres.start)
                    await until(lambda: ready(probe), "/readyz answering 200 after the restart")
                    await watch.handed_over(since=stalled)
                    assert await balance_problems(postgres.url) == [], "after the restart"
                    await probes.folded()
                    assert not sent.sending.done(), "sending ended before the faults did"
                    pace.hurry()
                problems = await settled_problems(postgres.url, probe, [sent], probes)
        finally:
            await asyncio.to_thread(postgres.stop)

    assert watch.most == 1, f"{watch.most} sessions held the leader lock at once"
    assert problems == []
