"""The budget check a gateway asks before every model call, and the search for crossings behind
ingest, on one stored data set: each check beside the plain totals read of the same window, in
the same run.

    .venv/bin/python bench/budgets.py                  # 10M events (about 20 minutes, most of
                                                       # it loading and folding them)
    .venv/bin/python bench/budgets.py --events 1000000
    .venv/bin/python bench/budgets.py --tiny           # seconds: that the benchmark still works

The data set is that of bench/costs.py: 30 days of 8 models, 2,000 tenants and 20,000 api keys,
stored by the write path's own statement and folded into the rollups; every model priced. The
busiest tenant gets a daily token budget, a monthly cost budget and a daily budget of one of its
models, each in Europe/Berlin; the checks ask for that tenant (and model). Figures are p50 / p99
of --reps runs of each query on one connection, the server's 2 workers sharing the machine's
cores with PostgreSQL and the load generator. The detection figure is one search of every
budget's watched windows, run as the notifier runs it, in the benchmark's own process.
"""

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tokenpulse.budgets.check import check_budgets
from tokenpulse.budgets.store import applying_budgets
from tokenpulse.database import async_url, snapshot
from tokenpulse.launches.milestones import stored_until
from tokenpulse.notifications.detection import detect
from tokenpulse.rollups.costs import price_bounds
from tokenpulse.rollups.exact import exact_totals

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from costs import TENANT, instant, price_requests, send_all
from dataset import MODELS, store_and_fold, thirty_days
from loadgen import percentile, request_bytes
from run import (
    FULL,
    TINY,
    Row,
    Rows,
    admin_key,
    fresh_database,
    number,
    on_a_database,
    table,
    time_queries,
    timed,
    tokenpulse,
)

ZONE = "Europe/Berlin"
MORE_BUDGETS = 100
"""Budgets of as many other tenants, for the detection figure."""


def budgets(tenant: str) -> list[dict[str, object]]:
    return [
        {"tenant": tenant, "metric": "total_tokens", "limit": 10**12, "window": "day"},
        {"tenant": tenant, "metric": "cost", "limit": "1000000", "window": "month"},
        {
            "tenant": tenant,
            "model": MODELS[0],
            "metric": "total_tokens",
            "limit": 10**11,
            "window": "day",
        },
    ]


def budget_requests(key: str, bodies: list[dict[str, object]]) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return [
        request_bytes(
            "POST",
            "/v1/budgets",
            headers,
            json.dumps({**body, "tz": ZONE, "thresholds": [50, 80, 100]}).encode(),
        )
        for body in bodies
    ]


def reads(now: datetime) -> dict[str, tuple[str, str]]:
    """Each check, and the totals read of the same window it is compared with."""
    midnight = now.astimezone(ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
    day = instant(midnight.astimezone(UTC))
    return {
        "check, 2 budgets apply (tokens today, cost this month)": (
            f"/v1/budgets/check?tenant={TENANT}",
            f"/v1/totals?tenant={TENANT}&start={day}",
        ),
        "check, 3 budgets apply (and one model's today)": (
            f"/v1/budgets/check?tenant={TENANT}&model={MODELS[0]}",
            f"/v1/totals?tenant={TENANT}&model={MODELS[0]}&start={day}",
        ),
        "check, no budget applies": (
            "/v1/budgets/check?tenant=tenant-1999",
            "/healthz",
        ),
    }


async def detection_seconds(url: str, now: datetime, reps: int) -> list[float]:
    engine: AsyncEngine = create_async_engine(async_url(url))
    seconds = []
    try:
        for _ in range(reps):
            async with snapshot(engine) as connection, connection.begin():
                started = time.perf_counter()
                await detect(connection, now=now, lead=timedelta(minutes=5))
                seconds.append(time.perf_counter() - started)
    finally:
        await engine.dispose()
    return seconds


async def check_breakdown(url: str, now: datetime, reps: int) -> dict[str, list[float]]:
    """Where one check of the busiest tenant (two budgets: tokens today, cost this month) spends
    its time inside one process: each step as the check runs it, timed alone."""
    engine: AsyncEngine = create_async_engine(async_url(url), pool_size=1)
    steps: dict[str, list[float]] = {}

    def timed_step(name: str, started: float) -> float:
        ended = time.perf_counter()
        steps.setdefault(name, []).append(ended - started)
        return ended

    until = stored_until(now, timedelta(minutes=5))
    try:
        for _ in range(reps):
            started = time.perf_counter()
            async with snapshot(engine) as connection, connection.begin():
                await connection.exec_driver_sql("SELECT 1")
                started = timed_step("a pooled connection, BEGIN and a first statement", started)
                budgets = await applying_budgets(connection, TENANT, {})
                started = timed_step("the budgets that apply (one statement)", started)
                selection = budgets[0].selection
                spans = [(b.window(now).start, until) for b in budgets]
                await price_bounds(connection, selection, min(s for s, _ in spans), until)
                started = timed_step("where price versions start (one statement)", started)
                await exact_totals(connection, selection, spans)
                started = timed_step(
                    "exact totals of both windows, priced (two statements)", started
                )
                await exact_totals(connection, selection, spans, priced=False)
                started = timed_step("the same without cost (one statement)", started)
            timed_step("COMMIT and the connection back to the pool", started)
            started = time.perf_counter()
            async with snapshot(engine) as connection:
                await check_budgets(connection, TENANT, {}, now=now, until=until)
            timed_step("the whole check, in-process", started)
    finally:
        await engine.dispose()
    return steps


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
        now = datetime.now(UTC)
        end = now.replace(minute=0, second=0, microsecond=0)
        day = thirty_days(events, end)
        load_seconds, folded_rows, fold_seconds = await store_and_fold(url, day)
        rows.append(
            Row(
                f"load {number(events)} events and fold {number(folded_rows)} pending rows (s)",
                f"{load_seconds:,.0f} + {fold_seconds:,.0f}",
            )
        )
        admin = {"Authorization": f"Bearer {key}"}
        checks = {name: pair[0] for name, pair in reads(now).items()}
        references = {name: pair[1] for name, pair in reads(now).items()}
        # The notifier stays out of the way of the timed reads: it runs once an hour here.
        with tokenpulse(url, args.workers, TOKENPULSE_NOTIFY_INTERVAL="3600") as (port, _):
            await send_all(port, price_requests(key, end, day.start), {201})
            await send_all(port, budget_requests(key, budgets(TENANT)), {201})
            checked = await time_queries(port, checks, admin, size, reps)
            totals = await time_queries(port, references, admin, size, reps)
            few = await detection_seconds(url, now, reps * 3)
            others = [
                {
                    "tenant": f"tenant-{rank:04}",
                    "metric": "total_tokens",
                    "limit": 10**9,
                    "window": "day",
                }
                for rank in range(2, 2 + MORE_BUDGETS)
            ]
            await send_all(port, budget_requests(key, others), {201})
            many = await detection_seconds(url, now, reps * 3)
            breakdown = await check_breakdown(url, now, size.query_repeats)
    for name in checks:
        latency, reference = checked[name], totals[name]
        rows.append(
            Row(
                f"{name}: p50 / p99 (ms)",
                timed(latency, size, reps),
                f"{references[name].split('?')[0]}: {reference.p50:.1f} / {reference.p99:.1f}",
                f"{latency.p99 / reference.p99:.2f}",
                "p99 ≤ 5",
            )
        )
    for budgets_searched, seconds in ((3, few), (3 + MORE_BUDGETS, many)):
        rows.append(
            Row(
                f"one detection, {budgets_searched} budgets: p50 / p99 (ms)",
                f"{percentile(seconds, 0.5) * 1000:.1f} / {percentile(seconds, 0.99) * 1000:.1f}",
                f"{percentile(seconds, 0.5) * 1000 / budgets_searched:.2f} ms a budget",
            )
        )
    for step, seconds in breakdown.items():
        rows.append(
            Row(
                f"   in-process: {step}: p50 / p99 (ms)",
                f"{percentile(seconds, 0.5) * 1000:.2f} / {percentile(seconds, 0.99) * 1000:.2f}",
            )
        )
    print(table(rows))
    return 0


def main(args: argparse.Namespace) -> int:
    return on_a_database(lambda server_url: run(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--events", type=int, help="events stored (default 10,000,000)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each query (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    raise SystemExit(main(parser.parse_args()))
