"""Exporting stored events: `GET /v1/events/export` beside PostgreSQL's own COPY of the same rows,
in the same run.

    .venv/bin/python bench/exports.py                  # 1M events (a few minutes)
    .venv/bin/python bench/exports.py --events 10000000
    .venv/bin/python bench/exports.py --tiny           # seconds: that the benchmark still works

The data set is that of the aggregate benchmark: 30 days of 8 models, 2,000 tenants and 20,000
api keys, stored by the write path's own statement. Each figure is the median of --reps runs of
one client reading one whole export as fast as it can (the service's 2 workers, PostgreSQL and
the client sharing the machine's cores): every event of the 30 days, gzipped and not, in pages
of 100,000 events followed by their cursors, and one busy tenant's. The references read the same
rows with `COPY (SELECT …) TO STDOUT` on one connection, as text, as the JSON lines an export
holds, and as those lines in the export's order, model by model, as its statements read them.
The workers' resident memory is sampled while they stream.
"""

import argparse
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from dataset import MODELS, load, settle, thirty_days
from run import Row, Rows, admin_key, fresh_database, number, on_a_database, resident_mib, table
from run import tokenpulse as serving_tokenpulse
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.instants import format_rfc3339

PAGE = 100_000
TENANT = "tenant-0001"
"""The busiest tenant of the simulated mix."""

_JSON_LINES = """
    SELECT row_to_json(line) FROM usage_event AS event CROSS JOIN LATERAL (
        SELECT event.event_id,
               to_char(event.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                   AS occurred_at,
               event.tenant, event.project, event.model,
               event.api_key_id, event.input_tokens, event.cached_input_tokens,
               event.cache_write_input_tokens, event.output_tokens, event.reasoning_tokens,
               event.attributes
    ) AS line"""


class MemoryPeak:
    """The highest resident memory of a process tree while a block runs, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = resident_mib(pid)
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, resident_mib(self.pid))

    def __enter__(self) -> "MemoryPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def export_seconds(
    port: int, key: str, params: dict[str, Any], *, gzip: bool = False, page: int | None = None
) -> tuple[float, int]:
    """One client reading a whole export (following cursors when paged): seconds, events."""
    headers = {"Authorization": f"Bearer {key}", "Accept-Encoding": "gzip" if gzip else "identity"}
    events = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600
    ) as client:
        query = {**params, **({"limit": page} if page else {})}
        while query:
            cursor = None
            async with client.stream("GET", "/v1/events/export", params=query) as answer:
                assert answer.status_code == 200, await answer.aread()
                tail = b""
                # Decoded as it arrives, as a consumer would, gzip included.
                async for chunk in answer.aiter_bytes():
                    events += chunk.count(b"\n")
                    tail = (tail + chunk)[-512:]
            if b'"next_cursor"' in tail:
                events -= 1
                cursor = tail.rsplit(b'"next_cursor":"', 1)[1].split(b'"', 1)[0].decode()
            query = {"cursor": cursor, "limit": page} if cursor else {}
    return time.perf_counter() - started, events


async def copy_seconds(url: str, query: str) -> tuple[float, int]:
    """PostgreSQL's COPY of `query` to a client that counts the lines: seconds, lines."""
    lines = 0

    async def count(data: bytes) -> None:
        nonlocal lines
        lines += data.count(b"\n")

    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await connection.copy_from_query(query, output=count)
        return time.perf_counter() - started, lines
    finally:
        await connection.close()


def median_rate(runs: list[tuple[float, int]]) -> tuple[float, int]:
    counts = {events for _, events in runs}
    assert len(counts) == 1, f"runs exported different counts: {counts}"
    return statistics.median(events / seconds for seconds, events in runs), counts.pop()


async def copy_ordered_seconds(url: str) -> tuple[float, int]:
    """COPY of the export's own lines and order, model by model as it reads them: seconds,
    lines. What PostgreSQL alone spends on an export."""
    seconds = lines = 0.0
    for model in MODELS:
        took, count = await copy_seconds(
            url,
            f"{_JSON_LINES} WHERE event.model = '{model}' "
            "ORDER BY event.occurred_at, event.event_id, event.tenant",
        )
        seconds, lines = seconds + took, lines + count
    return seconds, int(lines)


async def run(args: argparse.Namespace, server_url: str) -> int:
    reps = 1 if args.tiny else args.reps
    events = args.events or (4_000 if args.tiny else 1_000_000)
    page = 1_000 if args.tiny else PAGE
    rows = Rows()
    print(
        f"machine: {os.cpu_count()} cores shared by the service, PostgreSQL and the client; "
        f"{args.workers} tokenpulse workers; {reps} runs of each export",
        file=sys.stderr,
    )
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        day = thirty_days(events, end)
        engine = create_async_engine(async_url(url), pool_size=2)
        try:
            load_seconds = await load(engine, day)
            await settle(engine)
        finally:
            await engine.dispose()
        rows.append(Row(f"load {number(events)} events (s)", f"{load_seconds:,.0f}"))
        plain_url = url.replace("postgresql+asyncpg://", "postgresql://")
        everything = {"start": format_rfc3339(day.start), "end": format_rfc3339(end)}
        copied = [await copy_seconds(plain_url, "SELECT * FROM usage_event") for _ in range(reps)]
        as_json = [await copy_seconds(plain_url, _JSON_LINES) for _ in range(reps)]
        in_order = [await copy_ordered_seconds(plain_url) for _ in range(reps)]
        copy_rate, _ = median_rate(copied)
        json_rate, _ = median_rate(as_json)
        ordered_rate, _ = median_rate(in_order)
        with serving_tokenpulse(url, args.workers) as (port, pid):
            with MemoryPeak(pid) as memory:
                plain = [await export_seconds(port, key, everything) for _ in range(reps)]
                packed = [
                    await export_seconds(port, key, everything, gzip=True) for _ in range(reps)
                ]
                paged = [
                    await export_seconds(port, key, everything, page=page) for _ in range(reps)
                ]
            tenant = [
                await export_seconds(port, key, {**everything, "tenant": TENANT})
                for _ in range(reps)
            ]
    reference = f"COPY of the same rows {number(copy_rate)}; as JSON lines {number(json_rate)}"
    rows.append(
        Row(
            "COPY of the export's lines in its order, model by model (events/s)",
            number(ordered_rate),
            reference,
            f"{ordered_rate / json_rate:.2f}",
        )
    )
    for name, runs in (
        ("every event, NDJSON", plain),
        ("every event, NDJSON gzipped", packed),
        (f"every event, in pages of {number(page)} followed by cursors", paged),
        (f"one tenant ({TENANT}), NDJSON", tenant),
    ):
        rate, exported = median_rate(runs)
        rows.append(
            Row(
                f"export {name}: {number(exported)} events (events/s)",
                number(rate),
                reference,
                f"{rate / json_rate:.2f}",
            )
        )
    rows.append(
        Row(
            "workers' resident MiB before / peak while exporting",
            f"{memory.before:,.0f} / {memory.peak:,.0f}",
        )
    )
    print(table(rows))
    return 0


def main(args: argparse.Namespace) -> int:
    return on_a_database(lambda server_url: run(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument("--events", type=int, help="events stored (default 1,000,000)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each export (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="tokenpulse workers (default 2)")
    raise SystemExit(main(parser.parse_args()))
