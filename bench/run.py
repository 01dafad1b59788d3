"""Every tokenpulse benchmark in one run: one table, each figure beside its reference.

    .venv/bin/python bench/run.py            # the full run (about 20 minutes at 1M and 10M)
    .venv/bin/python bench/run.py --tiny     # seconds: that the benchmark still works

Load generators and the service share this machine's cores; figures are medians of --reps runs.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import create_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.simulator.launchday import LaunchDay

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from breakdown import COPY_COLUMNS, flush_breakdown
from dataset import MODELS, load, thirty_days
from loadgen import (
    DROPPED,
    Connection,
    Latencies,
    closed_loop,
    median,
    open_loop,
    request_bytes,
)

HOST = "127.0.0.1"
BENCH_DIR = str(Path(__file__).resolve().parent)
UNLIMITED = {f"TOKENPULSE_RATE_LIMIT_{scope.upper()}": "0" for scope in Scope}


@dataclass(frozen=True)
class Size:
    copy_events: int
    batch_requests: int
    single_seconds: float
    datasets: tuple[int, ...]
    query_repeats: int
    overload_seconds: float
    profiled_batches: int


FULL = Size(200_000, 200, 10.0, (1_000_000, 10_000_000), 300, 30.0, 60)
TINY = Size(5_000, 10, 1.0, (2_000, 4_000), 20, 2.0, 3)


@dataclass
class Row:
    figure: str
    value: str
    reference: str = ""
    ratio: str = ""
    goal: str = ""


class Rows(list[Row]):
    """The table's rows, each also shown on stderr as it is measured: a run that fails late
    still tells what it measured."""

    def append(self, row: Row) -> None:
        print(f"{row.figure}: {row.value}  {row.reference}  {row.ratio}", file=sys.stderr)
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


def ingest_requests(key: str, day: LaunchDay, batch: int) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return [
        request_bytes("POST", "/v1/events", headers, json.dumps({"events": events}).encode())
        for events in day.batches(batch)
    ]


async def copy_ceiling(server_url: str, size: Size, reps: int) -> float:
    """Events per second of raw COPY into a table like usage_event, with the same indexes."""
    rates = []
    async with fresh_database(server_url) as url:
        connection = await asyncpg.connect(url)
        await connection.execute("CREATE TABLE copy_target (LIKE usage_event INCLUDING ALL)")
        for rep in range(reps):
            records = [
                (
                    e["tenant"],
                    e["event_id"],
                    e["project"],
                    e["model"],
                    e["api_key_id"],
                    datetime.fromisoformat(e["occurred_at"]),
                    e["input_tokens"],
                    e["cached_input_tokens"],
                    e["output_tokens"],
                    e["reasoning_tokens"],
                    None,  # attributes
                )
                for e in launch_day(size.copy_events, seed=100 + rep)
            ]
            await connection.execute("TRUNCATE copy_target")
            started = time.perf_counter()
            await connection.copy_records_to_table(
                "copy_target",
                records=records,
                columns=COPY_COLUMNS,
            )
            rates.append(len(records) / (time.perf_counter() - started))
        await connection.close()
    return median(rates)


async def batch_ingest(
    server_url: str, size: Size, reps: int, workers: int
) -> tuple[float, Latencies]:
    rates, latencies = [], Latencies([])
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        with tokenpulse(url, workers) as (port, _):
            for rep in range(reps):
                day = launch_day(size.batch_requests * 1000, seed=200 + rep)
                requests = ingest_requests(key, day, 1000)
                seconds, run, statuses = await closed_loop(HOST, port, requests, connections=8)
                assert set(statuses) == {200}, statuses
                rates.append(size.batch_requests * 1000 / seconds)
                latencies.seconds += run.seconds
    return median(rates), latencies


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


async def aggregates(
    server_url: str, size: Size, reps: int, workers: int
) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    for events in size.datasets:
        async with fresh_database(server_url) as url:
            key = await admin_key(url)
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            day = thirty_days(events, end)
            engine: AsyncEngine = create_async_engine(async_url(url), pool_size=2)
            load_seconds = await load(engine, day)
            async with engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                # What autovacuum does a little after a bulk load: statistics, and the visibility
                # map that lets index-only scans skip the table. Then the load's dirty pages are
                # written out, so that the queries do not race the checkpointer writing them.
                await connection.exec_driver_sql("VACUUM (ANALYZE)")
                await connection.exec_driver_sql("CHECKPOINT")
            await engine.dispose()
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
                timings = {}
                for name, path in paths.items():
                    request = request_bytes("GET", path, headers)
                    await closed_loop(HOST, port, [request] * 5, connections=1)  # warm up
                    timings[name] = Latencies([])
                    for _ in range(reps):
                        _, latency, statuses = await closed_loop(
                            HOST, port, [request] * size.query_repeats, connections=1
                        )
                        assert set(statuses) == {200}, (name, statuses)
                        timings[name].seconds += latency.seconds
            results[events] = {"load_rate": events / load_seconds, "timings": timings}
    return results


async def overload(server_url: str, size: Size, workers: int, sustainable: float) -> dict[str, Any]:
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        with tokenpulse(url, workers) as (port, pid):
            before = resident_mib(pid)
            rate = 2 * sustainable / 1000  # requests of 1,000 events
            count = max(4, int(rate * size.overload_seconds))
            day = launch_day(count * 1000, seed=600)
            requests = ingest_requests(key, day, 1000)
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


async def run_all(args: argparse.Namespace, server_url: str) -> int:
    size = TINY if args.tiny else FULL
    reps = 1 if args.tiny else args.reps
    rows = Rows()
    print(
        f"machine: {os.cpu_count()} cores shared by the service, PostgreSQL and the load "
        f"generators; {args.workers} tokenpulse workers; medians of {reps} runs",
        file=sys.stderr,
    )
    ceiling = await copy_ceiling(server_url, size, reps)
    rows.append(Row("1. raw COPY into usage_event's shape (events/s)", number(ceiling)))
    batch_rate, batch_latency = await batch_ingest(server_url, size, reps, args.workers)
    rows.append(
        Row(
            "2. batch ingest, 1,000 events/request (events/s)",
            number(batch_rate),
            f"COPY {number(ceiling)}",
            f"{batch_rate / ceiling:.2f}",
            "≥ 0.5",
        )
    )
    rows.append(
        Row(
            "   batch ack latency p50 / p99 (ms)",
            f"{batch_latency.p50:.0f} / {batch_latency.p99:.0f}",
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
            f"{single['latency'].p50:.1f} / {single['latency'].p99:.1f}",
            f"{single['reference_latency'].p50:.1f} / {single['reference_latency'].p99:.1f}",
        )
    )
    rows.append(
        Row(
            f"   at half that rate ({number(single['half_rate'])}/s): p50 / p99 (ms)",
            f"{single['half_rate_latency'].p50:.1f} / {single['half_rate_latency'].p99:.1f}",
            "",
            "",
            "p99 ≤ 50",
        )
    )
    stored = await aggregates(server_url, size, reps, args.workers)
    small, large = size.datasets
    for events in size.datasets:
        rows.append(
            Row(
                f"4. load {number(events)} events, same statement as ingest (events/s)",
                number(stored[events]["load_rate"]),
            )
        )
    for name in queries(datetime.now(UTC)):
        low, high = stored[small]["timings"][name], stored[large]["timings"][name]
        rows.append(
            Row(
                f"   {name}: p50 / p99 (ms) at {number(large)}",
                f"{high.p50:.1f} / {high.p99:.1f}",
                f"at {number(small)}: {low.p50:.1f} / {low.p99:.1f}",
                f"{high.p99 / low.p99:.2f}",
                "p99 ≤ 10, ratio ≤ 1.5",
            )
        )
    flood = await overload(server_url, size, args.workers, batch_rate)
    rows.append(
        Row(
            f"5. 2x overload ({number(flood['rate'])} events/s offered, "
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
    print(table(rows))
    async with fresh_database(server_url) as url:
        day = launch_day(size.profiled_batches * 1000, seed=300)
        steps = await flush_breakdown(url, day.batches(1000))
    print(
        f"\nWhere a batch of 1,000 events spends its time (ms, median of {size.profiled_batches}):"
    )
    breakdown = [Row(step, f"{ms:.1f}") for step, ms in steps.items()]
    print(table(breakdown, header=Row("step", "ms")))
    return 0 if flood["acked"] == flood["stored"] else 1


@contextmanager
def database_server() -> Iterator[str]:
    """TOKENPULSE_BENCH_DATABASE_URL's server, or an embedded PostgreSQL of its own meanwhile."""
    configured = os.environ.get("TOKENPULSE_BENCH_DATABASE_URL")
    if configured:
        yield configured
        return
    embedded = start_embedded_postgres(Path(tempfile.mkdtemp(prefix="tokenpulse-bench-")))
    try:
        yield embedded.url
    finally:
        embedded.stop()


def main(args: argparse.Namespace) -> int:
    with database_server() as server_url:
        return asyncio.run(run_all(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    raise SystemExit(main(parser.parse_args()))
