"""What cost adds to the aggregates: the same queries on one stored data set, before any model
has a price and again once every model has two price versions, in the same run; and the
OpenAI-compatible reads beside tokenpulse's own for the same buckets.

    .venv/bin/python bench/costs.py                  # 10M events (about 20 minutes, most of
                                                     # it loading and folding them)
    .venv/bin/python bench/costs.py --events 1000000
    .venv/bin/python bench/costs.py --tiny           # seconds: that the benchmark still works

The data set is that of bench/run.py's (4): 30 days of 8 models, 2,000 tenants and 20,000 api
keys, stored by the write path's own statement and folded into the rollups. Without prices a
read asks once whether any version could apply, finds none and answers `cost: null`. With
prices, every rollup row read is joined to the version in effect at its bucket, and every range
is split where a version starts: here each model's second version starts mid-hour 3.5 days
before the data's end, inside every range the queries read. Figures are p50 / p99 of --reps
runs of each query, one connection, the server's 2 workers sharing the machine's cores with
PostgreSQL and the load generator.
"""

import argparse
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.keys.store import create_key
from tokenpulse.scopes import Scope

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from dataset import MODELS, store_and_fold, thirty_days
from loadgen import Latencies, closed_loop, request_bytes
from run import (
    FULL,
    HOST,
    TINY,
    Row,
    Rows,
    admin_key,
    fresh_database,
    number,
    on_a_database,
    queries,
    table,
    time_queries,
    timed,
    tokenpulse,
)

TENANT = "tenant-0001"
"""The organization of the OpenAI-compatible reads: the busiest tenant."""

PRICES = {
    "input": "2.5",
    "cached_input": "0.25",
    "cache_write_input": "3.125",
    "output": "10",
    "reasoning": "10",
}
CHANGED = {**PRICES, "input": "2", "output": "8", "reasoning": "8"}


def instant(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def openai_reads(end: datetime) -> dict[str, tuple[str, str]]:
    """Each OpenAI-compatible read, and tokenpulse's own read of the same buckets: the 7 days
    before the midnight at or before `end`."""
    end = end.replace(hour=0)
    week = end - timedelta(days=7)
    start_time = int(week.timestamp())
    own = f"/v1/usage?bucket=1d&start={instant(week)}&end={instant(end)}"
    return {
        "completions, 7 x 1d by model": (
            f"/v1/organization/usage/completions?start_time={start_time}"
            f"&end_time={int(end.timestamp())}&bucket_width=1d&limit=7&group_by=model",
            own + "&group_by=model",
        ),
        "costs, 7 x 1d": (
            f"/v1/organization/costs?start_time={start_time}&end_time={int(end.timestamp())}"
            "&bucket_width=1d&limit=7",
            own,
        ),
    }


async def read_key(url: str, tenant: str) -> str:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as connection:
            created = await create_key(connection, name=tenant, scope=Scope.READ, tenant=tenant)
    finally:
        await engine.dispose()
    return created.token


async def send_all(port: int, requests: list[bytes], wanted: set[int]) -> None:
    _, _, statuses = await closed_loop(HOST, port, requests, connections=1)
    assert set(statuses) <= wanted, statuses


def price_requests(key: str, end: datetime, start: datetime) -> list[bytes]:
    """Two versions a model: one from before the data, one from mid-hour 3.5 days before its
    end."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    change = end - timedelta(days=3, hours=12, minutes=-30)
    return [
        request_bytes(
            "PUT",
            f"/v1/prices/{model}",
            headers,
            json.dumps({"effective_from": instant(at), "per_million_tokens": prices}).encode(),
        )
        for model in MODELS
        for at, prices in ((start - timedelta(days=1), PRICES), (change, CHANGED))
    ]


async def run(args: argparse.Namespace, server_url: str) -> int:
    size = TINY if args.tiny else FULL
    reps = 1 if args.tiny else args.reps
    events = args.events or (4_000 if args.tiny else 10_000_000)
    rows = Rows()
    print(
        f"machine: {os.cpu_count()} cores shared by the service, PostgreSQL and the load "
        f"generator; {args.workers} tokenpulse workers; {reps} runs of each query",
        file=sys.stderr,
    )
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        tenant = await read_key(url, TENANT)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        day = thirty_days(events, end)
        load_seconds, folded_rows, fold_seconds = await store_and_fold(url, day)
        rows.append(
            Row(
                f"load {number(events)} events and fold {number(folded_rows)} pending rows (s)",
                f"{load_seconds:,.0f} + {fold_seconds:,.0f}",
            )
        )
        paths = queries(end)
        own_paths = {name: pair[1] for name, pair in openai_reads(end).items()}
        compatible = {name: pair[0] for name, pair in openai_reads(end).items()}
        admin = {"Authorization": f"Bearer {key}"}
        organization = {"Authorization": f"Bearer {tenant}"}
        with tokenpulse(url, args.workers) as (port, _):
            launch = json.dumps({"launched_at": instant(day.start)}).encode()
            headers = {**admin, "Content-Type": "application/json"}
            await send_all(
                port, [request_bytes("PUT", "/v1/launches/model-0", headers, launch)], {201}
            )
            unpriced = await time_queries(port, paths, admin, size, reps)
            unpriced_own = await time_queries(port, own_paths, organization, size, reps)
            await send_all(port, price_requests(key, end, day.start), {201})
            priced = await time_queries(port, paths, admin, size, reps)
            priced_own = await time_queries(port, own_paths, organization, size, reps)
            openai = await time_queries(port, compatible, organization, size, reps)
    for name in paths:
        rows.append(comparison(f"{name}, with cost", priced[name], "without", unpriced[name]))
    for name in compatible:
        reference = priced_own[name]
        rows.append(comparison(name, openai[name], "/v1/usage of the same buckets", reference))
        rows.append(
            Row(
                "   /v1/usage of the same buckets, without cost",
                timed(unpriced_own[name], size, reps),
            )
        )
    print(table(rows))
    return 0


def comparison(name: str, latency: Latencies, what: str, reference: Latencies) -> Row:
    return Row(
        f"{name}: p50 / p99 (ms)",
        f"{latency.p50:.1f} / {latency.p99:.1f}",
        f"{what}: {reference.p50:.1f} / {reference.p99:.1f}",
        f"{latency.p99 / reference.p99:.2f}",
        "p99 ≤ 10",
    )


def main(args: argparse.Namespace) -> int:
    return on_a_database(lambda server_url: run(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--events", type=int, help="events stored (default 10,000,000)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each query (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    raise SystemExit(main(parser.parse_args()))
