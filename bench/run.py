"""Every tokenpulse benchmark in one run: one table, each figure beside its reference.

    .venv/bin/python bench/run.py            # the full run (about 40 minutes at 1M and 10M)
    .venv/bin/python bench/run.py --tiny     # a minute or less: that the benchmark still works
    .venv/bin/python bench/run.py --neighbour  # only (7), the noisy neighbour: about 3 minutes

1. Batch ingest, 1,000 events a request from 8 connections, of live traffic (events of the last
   few minutes) and of a backfill (spread over 30 days), each beside two parallel COPY streams
   of the same rows and their keys into tables shaped like usage_event and event_key.
2. Sustained: live batches at (1)'s rate for 60 s, with the rows pending in rollup_pending and
   the materialiser's lag (the age of the oldest) sampled every 0.5 s.
3. Single-event ingest beside an endpoint that only parses the body; then at half that rate.
4. The dashboard's queries on 30 days of data at 1M and 10M events, loaded by the ingest
   statement and folded into the rollups by the materialiser's; at 10M, at rest and again
   while live batches arrive at half (1)'s rate.
5. Bytes stored per event at 10M, and each table's share.
6. Twice (1)'s rate for 30 s: what is refused, memory, and that every acked event is stored.
7. Noisy neighbour: one tenant's single events at 100 a second for 30 s, alone, and again while
   another tenant sends 10,000-event batches of duplicates at 90% of its events-per-second
   limit (the default limits apply here, and only here).

Then where one batch's flush, and the fold of its rows, spend their time (bench/breakdown.py).
Load generators and the service share this machine's cores; figures are medians of --reps runs.
Most of the full run's time goes to loading and folding the 10M events.
"""

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.rollups.materialiser import Pending, pending
from tokenpulse.scopes import Scope
from tokenpulse.simulator.launchday import INDEX_DIGITS, LaunchDay

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from breakdown import COPY_TABLES, copy_stored, flush_breakdown
from dataset import MODELS, as_event, fold_all, load, settle, thirty_days
from loadgen import (
    DROPPED,
    Connection,
    Latencies,
    closed_loop,
    median,
    open_loop,
    percentile,
    request_bytes,
)

HOST = "127.0.0.1"
BENCH_DIR = str(Path(__file__).resolve().parent)
UNLIMITED = {
    **{f"TOKENPULSE_RATE_LIMIT_{scope.upper()}": "0" for scope in Scope},
    "TOKENPULSE_RATE_LIMIT_INGEST_EVENTS": "0",
}


@dataclass(frozen=True)
class Size:
    batch_requests: int
    """Requests of 1,000 events in each run of batch ingest."""
    sustained_seconds: float
    single_seconds: float
    datasets: tuple[int, ...]
    query_repeats: int
    query_budget: float
    """Seconds one query's timed requests may take in all (over `reps` runs)."""
    background_warmup: float
    """Seconds of background ingest before the queries are timed again."""
    overload_seconds: float
    profiled_batches: int
    neighbour_seconds: float
    """Seconds the victim tenant is timed, alone and again beside a flood."""


FULL = Size(200, 60.0, 10.0, (1_000_000, 10_000_000), 300, 30.0, 5.0, 30.0, 60, 30.0)
TINY = Size(10, 3.0, 0.5, (2_000, 4_000), 20, 1.0, 0.5, 1.0, 3, 2.0)


@dataclass
class Row:
    figure: str
    value: str
    reference: str = ""
    ratio: str = ""
    goal: str = ""


class Rows(list[Row]):
    """The table's rows, each also shown on stderr as it is measured, with the seconds the run
    had taken by then: a run that fails late still tells what it measured."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def append(self, row: Row) -> None:
        elapsed = time.monotonic() - self.started
        print(
            f"[{elapsed:4.0f} s] {row.figure}: {row.value}  {row.reference}  {row.ratio}",
            file=sys.stderr,
        )
        super().append(row)


# -- databases and processes ---------------------------------------------------------------


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new database migrated to the newest revision, dropped afterwards."""
    name = f"tokenpulse_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(server_url).set(drivername="postgresql")
    connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
        url = admin.set(database=name).render_as_string(hide_password=False)
        engine = create_async_engine(async_url(url))
        async with engine.begin() as migrating:
            await upgrade_to_head(migrating)
        await engine.dispose()
        yield url
    finally:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def admin_key(url: str) -> str:
    engine = create_async_engine(async_url(url))
    async with engine.begin() as connection:
        created = await create_key(connection, name="bench", scope=Scope.ADMIN, tenant=None)
    await engine.dispose()
    return created.token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(command: list[str], env: dict[str, str], ready_path: str) -> Iterator[tuple[int, int]]:
    """A server process on a free port; yields (port, pid) once `ready_path` answers 200."""
    port = free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urlopen(f"http://{HOST}:{port}{ready_path}", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start") from None
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def tokenpulse(database_url: str, workers: int, **settings: str) -> Any:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED}
    env.update({f"TOKENPULSE_{name.upper()}": value for name, value in settings.items()})
    command = [sys.executable, "-m", "tokenpulse", "serve", "--workers", str(workers)]
    return serving(command, env, "/readyz")


def resident_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


# -- the sections --------------------------------------------------------------------------


def launch_day(events: int, seed: int) -> LaunchDay:
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    return LaunchDay(
        start=end - timedelta(hours=6),
        seed=seed,
        events=events,
        duration=timedelta(hours=6),
        models=MODELS[:2],
    )


BATCH = 1000
"""Events per ingest request."""

LIVE_SPAN = timedelta(minutes=2)


def live(events: int, seed: int) -> LaunchDay:
    """Live traffic: events of the last few minutes, from the simulator's 2,000 Zipf-sized
    tenants and 20,000 keys, to the 8 models of the aggregate data."""
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    return LaunchDay(
        start=end - LIVE_SPAN, seed=seed, models=MODELS, events=events, duration=LIVE_SPAN
    )


def backfill(events: int, seed: int) -> LaunchDay:
    """Backfill: the same tenants, keys and models, the events spread over the last 30 days."""
    return thirty_days(events, datetime.now(UTC).replace(second=0, microsecond=0), seed=seed)


SHAPES = {"live traffic": live, "backfill over 30 days": backfill}


def ingest_requests(key: str, batches: Iterable[list[dict[str, Any]]]) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return [
        request_bytes("POST", "/v1/events", headers, json.dumps({"events": events}).encode())
        for events in batches
    ]


def id_prefix(day: LaunchDay) -> str:
    """What every event id of `day` starts with."""
    first = next(iter(day))["event_id"]
    return str(first)[:-INDEX_DIGITS]


def renumbered(requests: Sequence[bytes], prefix: str) -> Iterator[bytes]:
    """`requests` over and over, each round's event ids new: `prefix`, which every event id in
    them starts with, replaced by one of the same length (the requests keep their length)."""
    old = f'"{prefix}'.encode()
    digits = len(prefix) - 2
    for round_ in range(10**digits):
        new = f'"r{round_:0{digits}d}-'.encode()
        for request in requests:
            yield request.replace(old, new)


async def parallel_copy(connections: list[Any], batches: list[list[dict[str, Any]]]) -> float:
    """Events per second of COPY of `batches` into copy_target and their keys into copy_keys
    (tables like usage_event and event_key, with the same indexes), the batches dealt out in
    turn to one pair of COPY streams per connection."""
    streams = [
        [as_event(event) for batch in batches[number :: len(connections)] for event in batch]
        for number in range(len(connections))
    ]
    await connections[0].execute("TRUNCATE copy_target, copy_keys")
    started = time.perf_counter()
    await asyncio.gather(
        *(
            copy_stored(connection, events)
            for connection, events in zip(connections, streams, strict=True)
        )
    )
    return sum(map(len, streams)) / (time.perf_counter() - started)


async def pending_now(engine: AsyncEngine) -> Pending:
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        return await pending(autocommit)


FOLDED_WITHIN = 600.0
"""Seconds the materialiser may take to fold what a measurement left pending."""


async def folded(engine: AsyncEngine) -> float:
    """Wait until the materialiser has folded every pending row; the seconds that took."""
    started = time.perf_counter()
    while (await pending_now(engine)).rows:
        if time.perf_counter() - started > FOLDED_WITHIN:
            raise RuntimeError(f"rows still pending after {FOLDED_WITHIN:.0f} s")
        await asyncio.sleep(0.05)
    return time.perf_counter() - started


SAMPLE_SECONDS = 0.5


@dataclass
class Background:
    """Live batches posted at `rate` events per second while something else is measured, and
    what was pending meanwhile, sampled every SAMPLE_SECONDS."""

    rate: float
    seconds: float = 0.0
    latency: Latencies = field(default_factory=lambda: Latencies([]))
    statuses: dict[int, int] = field(default_factory=dict)
    pending_rows: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)


@asynccontextmanager
async def ingesting(
    port: int, requests: Sequence[bytes], prefix: str, rate: float, engine: AsyncEngine
) -> AsyncIterator[Background]:
    """Post `requests` (renumbered, over and over) at `rate` events per second until the block
    ends; the figures are complete once it has."""
    load = Background(rate)
    stop = asyncio.Event()

    def until_stopped() -> Iterator[bytes]:
        for request in renumbered(requests, prefix):
            if stop.is_set():
                return
            yield request

    async def sample() -> None:
        while not stop.is_set():
            state = await pending_now(engine)
            load.pending_rows.append(state.rows)
            load.lag.append(state.lag)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)

    # Enough connections that a server that falls behind holds the backlog, not this client.
    sender = asyncio.create_task(
        open_loop(HOST, port, until_stopped(), rate=rate / BATCH, connections=64)
    )
    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    try:
        yield load
    finally:
        stop.set()
        load.seconds = time.perf_counter() - started
        load.latency, load.statuses, _ = await sender
        await sampler


@dataclass
class Ingest:
    rates: list[float] = field(default_factory=list)
    copies: list[float] = field(default_factory=list)
    latency: Latencies = field(default_factory=lambda: Latencies([]))


async def batch_ingest(
    server_url: str, size: Size, reps: int, workers: int
) -> tuple[dict[str, Ingest], Background, float]:
    """Each traffic shape's batch ingest beside two COPY streams of the same rows; then live
    batches at the live rate for `sustained_seconds`, and how long the rows pending at its end
    took to fold."""
    results = {shape: Ingest() for shape in SHAPES}
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        copiers = [await asyncpg.connect(url) for _ in range(2)]
        await copiers[0].execute(COPY_TABLES)
        engine = create_async_engine(async_url(url), pool_size=2)
        sustained_requests: list[bytes] = []
        prefix = ""
        try:
            with tokenpulse(url, workers) as (port, _):
                for rep in range(reps):
                    for number, (shape, make) in enumerate(SHAPES.items()):
                        day = make(size.batch_requests * BATCH, seed=200 + 10 * rep + number)
                        batches = list(day.batches(BATCH))
                        requests = ingest_requests(key, batches)
                        await folded(engine)
                        results[shape].copies.append(await parallel_copy(copiers, batches))
                        seconds, latency, statuses = await closed_loop(
                            HOST, port, requests, connections=8
                        )
                        assert set(statuses) == {200}, statuses
                        results[shape].rates.append(size.batch_requests * BATCH / seconds)
                        results[shape].latency.seconds += latency.seconds
                        if shape == "live traffic":
                            sustained_requests, prefix = requests, id_prefix(day)
                await folded(engine)
                rate = median(results["live traffic"].rates)
                async with ingesting(port, sustained_requests, prefix, rate, engine) as load:
                    await asyncio.sleep(size.sustained_seconds)
                drained = await folded(engine)
        finally:
            await engine.dispose()
            for copier in copiers:
                await copier.close()
    return results, load, drained


def single_requests(key: str | None, count: int, seed: int) -> list[bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return [
        request_bytes("POST", "/v1/events", headers, json.dumps(event).encode())
        for event in launch_day(count, seed=seed)
    ]


async def saturate(port: int, requests: list[bytes], seconds: float) -> tuple[float, Latencies]:
    """Requests per second, as many as `seconds` allow, with 32 connections."""
    elapsed, latencies, statuses = await closed_loop(HOST, port, requests, connections=32)
    assert set(statuses) == {200}, statuses
    return len(requests) / elapsed, latencies


async def single_event(server_url: str, size: Size, reps: int, workers: int) -> dict[str, Any]:
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        estimate = 4000  # requests per second, to size each run to about `single_seconds`
        count = int(estimate * size.single_seconds)
        empty_command = [
            sys.executable,
            "-m",
            "uvicorn",
            "empty_app:app",
            "--workers",
            str(workers),
            "--app-dir",
            BENCH_DIR,
            "--no-access-log",
        ]
        reference, ours, ours_latency, ref_latency = [], [], Latencies([]), Latencies([])
        with serving(empty_command, {}, "/docs") as (port, _):
            for rep in range(reps):
                rate, latency = await saturate(
                    port, single_requests(None, count, 300 + rep), size.single_seconds
                )
                reference.append(rate)
                ref_latency.seconds += latency.seconds
        with tokenpulse(url, workers) as (port, _):
            for rep in range(reps):
                rate, latency = await saturate(
                    port, single_requests(key, count, 400 + rep), size.single_seconds
                )
                ours.append(rate)
                ours_latency.seconds += latency.seconds
            half = median(ours) / 2
            paced = Latencies([])
            for rep in range(reps):
                latency, statuses, _ = await open_loop(
                    HOST,
                    port,
                    single_requests(key, int(half * size.single_seconds), 500 + rep),
                    rate=half,
                    connections=64,
                )
                assert set(statuses) == {200}, statuses
                paced.seconds += latency.seconds
    return {
        "ours": median(ours),
        "reference": median(reference),
        "latency": ours_latency,
        "reference_latency": ref_latency,
        "half_rate_latency": paced,
        "half_rate": half,
    }


def queries(end: datetime) -> dict[str, str]:
    """The dashboard queries measured, for data that ends at `end`."""
    week = (end - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "totals 24h by model": "/v1/totals?window=24h&group_by=model",
        "usage 1h x 7d, 5 tenants by tenant": (
            f"/v1/usage?bucket=1h&start={week}&group_by=tenant"
            + "".join(f"&tenant=tenant-{rank:04}" for rank in (1, 2, 10, 100, 1000))
        ),
        "launch summary": "/v1/launches/model-0",
    }


WARM_UP = 5
"""Requests of each query sent before any is timed."""


async def time_queries(
    port: int, paths: dict[str, str], headers: dict[str, str], size: Size, reps: int
) -> dict[str, Latencies]:
    """Each query `query_repeats` times in a row, `reps` times over, on one connection, after a
    few untimed (for at most a quarter of `query_budget`); a query whose timed requests take
    more than `query_budget` seconds in all is timed on those answered by then, one at least."""
    timings = {}
    for name, path in paths.items():
        request = request_bytes("GET", path, headers)
        timings[name] = latency = Latencies([])
        connection = await Connection.open(HOST, port)
        try:
            deadline = time.perf_counter() + size.query_budget / 4
            for _ in range(WARM_UP):
                status, _, _ = await connection.send(request)
                assert status == 200, (name, status)
                if time.perf_counter() > deadline:
                    break
            deadline = time.perf_counter() + size.query_budget
            for _ in range(reps * size.query_repeats):
                if latency.seconds and time.perf_counter() > deadline:
                    break
                started = time.perf_counter()
                status, _, _ = await connection.send(request)
                assert status == 200, (name, status)
                latency.seconds.append(time.perf_counter() - started)
        finally:
            await connection.close()
    return timings


async def stored_bytes(engine: AsyncEngine) -> tuple[int, dict[str, int]]:
    """The database's size, and each table's with its indexes and TOAST (a partitioned one's
    partitions summed into it), largest first."""
    async with engine.connect() as connection:
        database = await connection.scalar(text("SELECT pg_database_size(current_database())"))
        tables = await connection.execute(
            text(
                "SELECT coalesce(parent.relname, c.relname), sum(pg_total_relation_size(c.oid))"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
                " LEFT JOIN pg_class parent ON parent.oid = i.inhparent"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
                " GROUP BY 1 ORDER BY 2 DESC, 1"
            )
        )
        return int(database), {name: int(size) for name, size in tables}


@dataclass
class Stored:
    """One data set: how fast it loaded and folded, and how fast the queries read it."""

    load_rate: float
    folded_rows: int
    fold_seconds: float
    timings: dict[str, Latencies]
    database_bytes: int = 0
    table_bytes: dict[str, int] = field(default_factory=dict)
    under_ingest: dict[str, Latencies] = field(default_factory=dict)
    background: Background | None = None


async def aggregates(
    server_url: str, size: Size, reps: int, workers: int, batch_rate: float
) -> dict[int, Stored]:
    """The queries on each data set at rest; on the largest, its bytes per event, and the
    queries again while live batches arrive at half `batch_rate`."""
    results: dict[int, Stored] = {}
    for events in size.datasets:
        largest = events == max(size.datasets)
        async with fresh_database(server_url) as url:
            key = await admin_key(url)
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            day = thirty_days(events, end)
            engine: AsyncEngine = create_async_engine(async_url(url), pool_size=2)
            try:
                load_seconds = await load(engine, day)
                folded_rows, fold_seconds = await fold_all(engine)
                await settle(engine)
                stored = Stored(events / load_seconds, folded_rows, fold_seconds, {})
                if largest:
                    stored.database_bytes, stored.table_bytes = await stored_bytes(engine)
                paths = queries(end)
                with tokenpulse(url, workers) as (port, _):
                    headers = {"Authorization": f"Bearer {key}"}
                    put = json.dumps({"launched_at": day.start.strftime("%Y-%m-%dT%H:%M:%SZ")})
                    launch = request_bytes(
                        "PUT",
                        "/v1/launches/model-0",
                        {**headers, "Content-Type": "application/json"},
                        put.encode(),
                    )
                    await closed_loop(HOST, port, [launch], connections=1)
                    stored.timings = await time_queries(port, paths, headers, size, reps)
                    if largest:
                        traffic = live(size.batch_requests * BATCH, seed=800)
                        requests = ingest_requests(key, traffic.batches(BATCH))
                        async with ingesting(
                            port, requests, id_prefix(traffic), batch_rate / 2, engine
                        ) as background:
                            await asyncio.sleep(size.background_warmup)
                            stored.under_ingest = await time_queries(
                                port, paths, headers, size, reps
                            )
                        stored.background = background
            finally:
                await engine.dispose()
            results[events] = stored
    return results


async def overload(server_url: str, size: Size, workers: int, sustainable: float) -> dict[str, Any]:
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        with tokenpulse(url, workers) as (port, pid):
            before = resident_mib(pid)
            rate = 2 * sustainable / 1000  # requests of 1,000 events
            count = max(4, int(rate * size.overload_seconds))
            day = launch_day(count * 1000, seed=600)
            requests = ingest_requests(key, day.batches(BATCH))
            peak = [before]

            async def watch() -> None:
                while True:
                    peak.append(resident_mib(pid))
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch())
            # Enough connections to put the whole backlog on the server, not in this client.
            latency, statuses, answers = await open_loop(
                HOST, port, requests, rate=rate, connections=512
            )
            watcher.cancel()
            await asyncio.sleep(1)
            after = resident_mib(pid)
            acked = sum(
                json.loads(body)["accepted"] + json.loads(body)["duplicates"] for body in answers
            )
            totals = request_bytes(
                "GET",
                f"/v1/totals?start={day.start.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                f"&end={day.end.strftime('%Y-%m-%dT%H:%M:%SZ')}&project={day.project}",
                {"Authorization": f"Bearer {key}"},
            )
            stored_answer: list[int] = []

            async def read_stored() -> None:
                connection = await Connection.open(HOST, port)
                _, body, _ = await connection.send(totals)
                results = json.loads(body)["results"]
                stored_answer.append(results[0]["requests"] if results else 0)
                await connection.close()

            await read_stored()
    refused = statuses.get(503, 0) + statuses.get(429, 0) + statuses.get(DROPPED, 0)
    return {
        "rate": rate * 1000,
        "statuses": statuses,
        "refused_share": refused / len(requests),
        "latency": latency,
        "before": before,
        "peak": max(peak),
        "after": after,
        "acked": acked,
        "stored": stored_answer[0],
    }


VICTIM_RATE = 100.0
"""The victim's single events a second."""
FLOOD_BATCH = 10_000
FLOOD_SHARE_OF_LIMIT = 0.9
EVENTS_LIMIT = 10_000.0
"""TOKENPULSE_RATE_LIMIT_INGEST_EVENTS's default, per worker."""


async def noisy_neighbour(server_url: str, size: Size, workers: int) -> dict[str, Any]:
    """The victim's ack latency alone and beside a flood within the flooding tenant's limit."""
    async with fresh_database(server_url) as url:
        victim = await tenant_key(url, "victim")
        flooder = await tenant_key(url, "flood")
        count = int(VICTIM_RATE * size.neighbour_seconds)
        alone_requests = victim_requests(victim, count, seed=700)
        beside_requests = victim_requests(victim, count, seed=701)
        flood_body = json.dumps(
            {"events": [{**event, "tenant": "flood"} for event in launch_day(FLOOD_BATCH, 702)]}
        ).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {flooder}"}
        flood_request = request_bytes("POST", "/v1/events", headers, flood_body)
        limits = {"rate_limit_ingest_events": str(int(EVENTS_LIMIT))}
        with tokenpulse(url, workers, **limits) as (port, _):
            await closed_loop(HOST, port, alone_requests[:50], connections=4)  # warm up
            alone, alone_statuses, _ = await open_loop(
                HOST, port, alone_requests, rate=VICTIM_RATE, connections=16
            )
            stop = asyncio.Event()

            def flood() -> Iterator[bytes]:
                while not stop.is_set():
                    yield flood_request

            flood_rate = FLOOD_SHARE_OF_LIMIT * EVENTS_LIMIT * workers / FLOOD_BATCH
            flooding = asyncio.create_task(
                open_loop(HOST, port, flood(), rate=flood_rate, connections=16)
            )
            await asyncio.sleep(2)  # the flood under way
            beside, beside_statuses, _ = await open_loop(
                HOST, port, beside_requests, rate=VICTIM_RATE, connections=16
            )
            stop.set()
            _, flood_statuses, _ = await flooding
    return {
        "alone": alone,
        "beside": beside,
        "statuses": {"alone": alone_statuses, "beside": beside_statuses},
        "flood_rate": flood_rate * FLOOD_BATCH,
        "flood_statuses": flood_statuses,
    }


async def tenant_key(url: str, tenant: str) -> str:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as connection:
            created = await create_key(connection, name=tenant, scope=Scope.INGEST, tenant=tenant)
    finally:
        await engine.dispose()
    return created.token


def victim_requests(key: str, count: int, seed: int) -> list[bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return [
        request_bytes(
            "POST", "/v1/events", headers, json.dumps({**event, "tenant": "victim"}).encode()
        )
        for event in launch_day(count, seed=seed)
    ]


# -- the table -----------------------------------------------------------------------------


def number(value: float) -> str:
    return f"{value:,.0f}"


MAIN_HEADER = Row("figure", "tokenpulse", "reference (same run)", "ratio", "goal")


def table(rows: list[Row], header: Row = MAIN_HEADER) -> str:
    """A Markdown table of `rows`, without the columns that no row fills."""
    fields = [f for f in ("figure", "value", "reference", "ratio", "goal") if getattr(header, f)]
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in fields]
    lines = []
    for index, row in enumerate([header, *rows]):
        cells = [getattr(row, f) for f in fields]
        lines.append(
            "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def milliseconds(latency: Latencies, digits: int = 1) -> str:
    return f"{latency.p50:.{digits}f} / {latency.p99:.{digits}f}"


def timed(latency: Latencies, size: Size, reps: int) -> str:
    """`latency` as p50 / p99, and how many requests it covers when the budget cut them short."""
    planned = reps * size.query_repeats
    if len(latency.seconds) >= planned:
        return milliseconds(latency)
    cut = f"{len(latency.seconds)} of {planned} in {size.query_budget:.0f} s"
    return f"{milliseconds(latency)} ({cut})"


def p50_p99(values: list[float], digits: int = 0) -> str:
    return f"{percentile(values, 0.5):,.{digits}f} / {percentile(values, 0.99):,.{digits}f}"


def statuses_of(load: Background) -> str:
    return f"statuses {dict(sorted(load.statuses.items()))}"


def bytes_rows(events: int, stored: Stored) -> list[Row]:
    database = stored.database_bytes
    rows = [
        Row(
            f"5. bytes stored per event at {number(events)} (database size / events)",
            number(database / events),
            f"database {database / 2**20:,.0f} MiB",
        )
    ]
    parts = {f"{name}, with indexes and TOAST": size for name, size in stored.table_bytes.items()}
    parts["the rest: PostgreSQL's own catalogs"] = database - sum(stored.table_bytes.values())
    for name, size in parts.items():
        rows.append(
            Row(f"   {name}", f"{size / events:,.1f}", f"{size / database:.1%} of the database")
        )
    return rows


def neighbour_rows(neighbour: dict[str, Any]) -> list[Row]:
    return [
        Row(
            f"7. noisy neighbour: victim's single events at {VICTIM_RATE:.0f}/s beside a flood of "
            f"{number(neighbour['flood_rate'])} events/s: p50 / p99 (ms)",
            milliseconds(neighbour["beside"]),
            f"alone {milliseconds(neighbour['alone'])}",
            f"{neighbour['beside'].p99 / neighbour['alone'].p99:.2f}",
            "≤ 2",
        ),
        Row(
            "   statuses: victim alone / beside; flood",
            f"{neighbour['statuses']['alone']} / {neighbour['statuses']['beside']}",
            f"flood {neighbour['flood_statuses']}",
        ),
    ]


async def run_all(args: argparse.Namespace, server_url: str) -> int:
    size = TINY if args.tiny else FULL
    reps = 1 if args.tiny else args.reps
    rows = Rows()
    print(
        f"machine: {os.cpu_count()} cores shared by the service, PostgreSQL and the load "
        f"generators; {args.workers} tokenpulse workers; medians of {reps} runs",
        file=sys.stderr,
    )
    if args.neighbour:
        for _ in range(reps):
            for row in neighbour_rows(await noisy_neighbour(server_url, size, args.workers)):
                rows.append(row)
        print(table(rows))
        return 0
    batch, sustained, drained = await batch_ingest(server_url, size, reps, args.workers)
    for shape, ingest in batch.items():
        rate, copy = median(ingest.rates), median(ingest.copies)
        rows.append(
            Row(
                f"1. batch ingest, {shape}, 1,000 events/request (events/s)",
                number(rate),
                f"2 COPY streams of the same rows {number(copy)}",
                f"{rate / copy:.2f}",
                "≥ 0.5",
            )
        )
        rows.append(Row("   ack latency p50 / p99 (ms)", milliseconds(ingest.latency, 0)))
    rows.append(
        Row(
            f"2. sustained: live batches at that rate ({number(sustained.rate)} events/s) for "
            f"{sustained.seconds:.0f} s: rows pending p50 / p99",
            p50_p99(sustained.pending_rows),
        )
    )
    rows.append(
        Row(
            f"   materialiser lag p50 / p99 (s), sampled every {SAMPLE_SECONDS} s",
            p50_p99(sustained.lag, 2),
            f"all folded {drained:.1f} s after the last ack",
            "",
            "p99 ≤ 2",
        )
    )
    rows.append(
        Row(
            "   ack latency p50 / p99 (ms), from when each request was due",
            milliseconds(sustained.latency, 0),
            statuses_of(sustained),
        )
    )
    single = await single_event(server_url, size, reps, args.workers)
    rows.append(
        Row(
            "3. single-event ingest (requests/s)",
            number(single["ours"]),
            f"parse-only endpoint {number(single['reference'])}",
            f"{single['ours'] / single['reference']:.2f}",
            "≥ 0.7",
        )
    )
    rows.append(
        Row(
            "   saturated p50 / p99 (ms)",
            milliseconds(single["latency"]),
            milliseconds(single["reference_latency"]),
        )
    )
    rows.append(
        Row(
            f"   at half that rate ({number(single['half_rate'])}/s): p50 / p99 (ms)",
            milliseconds(single["half_rate_latency"]),
            "",
            "",
            "p99 ≤ 50",
        )
    )
    live_rate = median(batch["live traffic"].rates)
    stored = await aggregates(server_url, size, reps, args.workers, live_rate)
    small, large = size.datasets
    for events in size.datasets:
        rows.append(
            Row(
                f"4. load {number(events)} events, same statement as ingest (events/s)",
                number(stored[events].load_rate),
            )
        )
        rows.append(
            Row(
                f"   then fold its {number(stored[events].folded_rows)} pending rows into the "
                "rollups (rows/s)",
                number(stored[events].folded_rows / stored[events].fold_seconds),
                f"in {stored[events].fold_seconds:,.1f} s",
            )
        )
    for name in queries(datetime.now(UTC)):
        low, high = stored[small].timings[name], stored[large].timings[name]
        rows.append(
            Row(
                f"   {name}: p50 / p99 (ms) at {number(large)}, at rest",
                timed(high, size, reps),
                f"at {number(small)}: {timed(low, size, reps)}",
                f"{high.p99 / low.p99:.2f}",
                "p99 ≤ 10, ratio ≤ 1.5",
            )
        )
    background = stored[large].background
    assert background is not None
    for name in queries(datetime.now(UTC)):
        rest, busy = stored[large].timings[name], stored[large].under_ingest[name]
        rows.append(
            Row(
                f"   {name}: p50 / p99 (ms) at {number(large)}, while ingesting",
                timed(busy, size, reps),
                f"at rest: {milliseconds(rest)}",
                f"{busy.p99 / rest.p99:.2f}",
                "p99 ≤ 10",
            )
        )
    rows.append(
        Row(
            f"   meanwhile: live batches at half the batch rate ({number(background.rate)} "
            "events/s): rows pending p50 / p99",
            p50_p99(background.pending_rows),
            f"lag p50 / p99 (s) {p50_p99(background.lag, 2)}; {statuses_of(background)}",
        )
    )
    for row in bytes_rows(large, stored[large]):
        rows.append(row)
    flood = await overload(server_url, size, args.workers, live_rate)
    rows.append(
        Row(
            f"6. 2x overload ({number(flood['rate'])} events/s offered, "
            f"{size.overload_seconds:.0f} s): refused 503/429",
            f"{flood['refused_share']:.0%}",
            f"statuses {flood['statuses']}",
        )
    )
    rows.append(
        Row(
            "   resident MiB before / peak / after",
            f"{flood['before']:.0f} / {flood['peak']:.0f} / {flood['after']:.0f}",
        )
    )
    rows.append(
        Row(
            "   acked events / stored events",
            f"{number(flood['acked'])}",
            f"stored {number(flood['stored'])}",
            "",
            "equal",
        )
    )
    for row in neighbour_rows(await noisy_neighbour(server_url, size, args.workers)):
        rows.append(row)
    print(table(rows))
    async with fresh_database(server_url) as url:
        day = live(size.profiled_batches * BATCH, seed=300)
        steps = await flush_breakdown(url, day.batches(BATCH))
    print(
        f"\nWhere a batch of 1,000 live events spends its time, from its flush to the fold of its "
        f"rows (ms, median of {size.profiled_batches}):"
    )
    breakdown = [Row(step, f"{ms:.1f}") for step, ms in steps.items()]
    print(table(breakdown, header=Row("step", "ms")))
    return 0 if flood["acked"] == flood["stored"] else 1


@contextmanager
def database_server() -> Iterator[str]:
    """TOKENPULSE_BENCH_DATABASE_URL's server, or an embedded PostgreSQL of its own meanwhile,
    its data folder removed afterwards (gigabytes after a full run)."""
    configured = os.environ.get("TOKENPULSE_BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="tokenpulse-bench-") as data_dir:
        embedded = start_embedded_postgres(Path(data_dir))
        try:
            yield embedded.url
        finally:
            embedded.stop()


def on_a_database(benchmark: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Run `benchmark` with the URL of the benchmark's PostgreSQL server (see
    `database_server`); its exit status."""
    # SIGTERM ends the run as Ctrl-C does, through the blocks that stop and remove what it made.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with database_server() as server_url:
        return asyncio.run(benchmark(server_url))


def main(args: argparse.Namespace) -> int:
    return on_a_database(lambda server_url: run_all(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    parser.add_argument(
        "--neighbour", action="store_true", help="only (7), the noisy neighbour, --reps times"
    )
    raise SystemExit(main(parser.parse_args()))
