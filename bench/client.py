"""The Python client's throughput to one server, beside a plain httpx loop in the same run.

    .venv/bin/python bench/client.py            # 100,000 events a run, medians of 3 runs
    .venv/bin/python bench/client.py --tiny     # seconds: that the benchmark still works

The same live events (bench/run.py's traffic) go to one `tokenpulse serve` three ways, each
run with event ids of its own, once the rows of the run before are folded:

- reference: a loop that POSTs them as 1,000-event gzipped `{"events": [...]}` bodies with one
  httpx.Client, each body encoded just before it is sent;
- `Client`: recorded one by one from one thread (`record` takes each event's fields), then
  `flush()`; with one request in flight, as the loop has, and with two, the default;
- `AsyncClient`: the same from one task, `await record(...)` each, then `await flush()`.

Each figure is events per second from the first event handed over to the last one answered
for; every run must end with all its events accepted. The client, the server and PostgreSQL
share this machine's cores.
"""

import argparse
import asyncio
import gzip
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.client import AsyncClient, Client, Counts
from tokenpulse.client.backlog import GZIP_LEVEL
from tokenpulse.database import async_url

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from run import (
    BATCH,
    Row,
    Rows,
    admin_key,
    database_server,
    folded,
    fresh_database,
    live,
    table,
    tokenpulse,
)

Event = dict[str, Any]
Way = Callable[[str, str, list[Event]], float]
"""Sends events to a server (its URL, an ingest key); the events per second it took."""


@dataclass(frozen=True)
class Size:
    events: int
    reps: int


FULL = Size(100_000, 3)
TINY = Size(5_000, 1)


def renamed(events: list[Event], run: str) -> list[Event]:
    """`events` with ids of their own for this run: no run's events are duplicates."""
    return [{**event, "event_id": f"{run}-{event['event_id']}"} for event in events]


def fields(event: Event) -> dict[str, Any]:
    """`record`'s keyword arguments for `event`."""
    return {**event, "occurred_at": datetime.fromisoformat(event["occurred_at"])}


def plain_httpx_loop(url: str, key: str, events: list[Event]) -> float:
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        started = time.perf_counter()
        for start in range(0, len(events), BATCH):
            body = json.dumps({"events": events[start : start + BATCH]}, separators=(",", ":"))
            answer = http.post("/v1/events", content=gzip.compress(body.encode(), GZIP_LEVEL))
            if answer.status_code != 200 or answer.json()["accepted"] != len(
                events[start : start + BATCH]
            ):
                raise RuntimeError(f"the reference loop was answered {answer.text[:300]}")
        return len(events) / (time.perf_counter() - started)


def threaded_client(concurrency: int) -> Way:
    def send(url: str, key: str, events: list[Event]) -> float:
        records = [fields(event) for event in events]
        with Client(url, key, batch_size=BATCH, concurrency=concurrency) as client:
            started = time.perf_counter()
            for record in records:
                client.record(**record)
            counts = client.flush()
            seconds = time.perf_counter() - started
        return all_accepted(counts, len(events)) / seconds

    return send


def async_client(concurrency: int) -> Way:
    def send(url: str, key: str, events: list[Event]) -> float:
        records = [fields(event) for event in events]

        async def record_all() -> float:
            async with AsyncClient(url, key, batch_size=BATCH, concurrency=concurrency) as client:
                started = time.perf_counter()
                for record in records:
                    await client.record(**record)
                counts = await client.flush()
                seconds = time.perf_counter() - started
            return all_accepted(counts, len(events)) / seconds

        return asyncio.run(record_all())

    return send


def all_accepted(counts: Counts, events: int) -> int:
    if counts.accepted != events or counts.recorded != events:
        raise RuntimeError(f"the client's run ended with {counts}")
    return events


REFERENCE = "plain httpx loop"
WAYS: dict[str, Way] = {
    REFERENCE: plain_httpx_loop,
    "Client, 1 request in flight": threaded_client(1),
    "Client, 2 requests in flight (the default)": threaded_client(2),
    "AsyncClient, 1 request in flight": async_client(1),
    "AsyncClient, 2 requests in flight (the default)": async_client(2),
}


async def measure(server_url: str, size: Size, workers: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    day = list(live(size.events, seed=400))
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        engine = create_async_engine(async_url(url), pool_size=1)
        try:
            with tokenpulse(url, workers) as (port, _):
                server = f"http://127.0.0.1:{port}"
                for rep in range(size.reps):
                    # Each rep in another order, so that none always meets the emptiest tables.
                    ways = list(WAYS.items())
                    shift = rep % len(ways)
                    for way, send in ways[shift:] + ways[:shift]:
                        # The last run's rows folded first: no run shares the cores with that.
                        await folded(engine)
                        events = renamed(day, f"{list(WAYS).index(way)}-{rep}")
                        rates[way].append(await asyncio.to_thread(send, server, key, events))
        finally:
            await engine.dispose()
    return rates


def run_all(size: Size, workers: int) -> int:
    rows = Rows()
    print(
        f"machine: {os.cpu_count()} cores shared by the client, the service and PostgreSQL; "
        f"{workers} tokenpulse workers; {size.events:,} events a run, medians of {size.reps}",
        file=sys.stderr,
    )
    with database_server() as server_url:
        rates = asyncio.run(measure(server_url, size, workers))
    reference = statistics.median(rates[REFERENCE])
    for way, measured in rates.items():
        if way != REFERENCE:
            rate = statistics.median(measured)
            rows.append(
                Row(
                    f"{way}: record + flush (events/s)",
                    f"{rate:,.0f}",
                    f"{REFERENCE}, 1,000-event gzip bodies {reference:,.0f}",
                    f"{rate / reference:.2f}",
                )
            )
    print(table(rows, header=Row("figure", "client", "reference (same run)", "ratio")))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--reps", type=int, help="runs per figure (default 3)")
    parser.add_argument("--events", type=int, help="events per run (default 100,000)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    args = parser.parse_args()
    size = TINY if args.tiny else FULL
    size = Size(args.events or size.events, args.reps or size.reps)
    raise SystemExit(run_all(size, args.workers))
