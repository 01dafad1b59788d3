"""Soak runs of the fault tests: the same faults, many more times, while far more events flow.

    .venv/bin/python bench/soak.py                        # about 10 minutes on 2 cores
    .venv/bin/python bench/soak.py --events 1000000 --faults 30 --only sigkill

Each scenario sends a seeded day of usage while its fault strikes again and again (the service
SIGKILLed, the database crashed with flushes in flight, the service stopped with SIGTERM while
every gateway waits for an answer), then checks that every acknowledged event is stored exactly
once. It prints what it saw broken, if anything, and exits 1 then. The database is
TOKENPULSE_BENCH_DATABASE_URL's server or an embedded one of its own; the crash scenario always
starts a PostgreSQL of its own.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fault scenarios
from run import database_server, fresh_database
from tests.faults import (
    postgres_restart_scenario,
    prepare_database,
    sigkill_scenario,
    sigterm_scenario,
)
from tests.gateways import Load

SCENARIOS = ("sigkill", "postgres", "sigterm")

Scenario = Callable[[Load, int, Path], Awaitable[list[str]]]


async def soak(args: argparse.Namespace, server_url: str) -> int:
    async def sigkill(load: Load, faults: int, log_dir: Path) -> list[str]:
        async with fresh_database(server_url) as url:
            key = await prepare_database(url)
            return await sigkill_scenario(url, key, log_dir, load, kills=faults)

    async def sigterm(load: Load, faults: int, log_dir: Path) -> list[str]:
        async with fresh_database(server_url) as url:
            key = await prepare_database(url)
            return await sigterm_scenario(url, key, log_dir, load, stops=faults)

    async def postgres(load: Load, faults: int, log_dir: Path) -> list[str]:
        return await postgres_restart_scenario(log_dir, load, restarts=faults)

    scenarios: dict[str, Scenario] = {
        "sigkill": sigkill,
        "postgres": postgres,
        "sigterm": sigterm,
    }
    failed = False
    log_dir = Path(tempfile.mkdtemp(prefix="tokenpulse-soak-"))
    for seed, name in enumerate(args.only or SCENARIOS, start=900):
        load = Load(events=args.events, seed=seed, batch=args.batch)
        print(f"{name}: {args.faults} faults while {args.events:,} events are sent", flush=True)
        began = time.monotonic()
        problems = await scenarios[name](load, args.faults, log_dir)
        seconds = time.monotonic() - began
        verdict = "passed" if not problems else "FAILED"
        print(f"{name}: {verdict} in {seconds:.0f} s", flush=True)
        for problem in problems:
            print(f"  {problem}", flush=True)
        failed = failed or bool(problems)
    print(f"server logs: {log_dir}")
    return 1 if failed else 0


def main(args: argparse.Namespace) -> int:
    with database_server() as server_url:
        return asyncio.run(soak(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per scenario")
    parser.add_argument("--faults", type=int, default=10, help="faults per scenario")
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--only", action="append", choices=SCENARIOS, help="run only these")
    raise SystemExit(main(parser.parse_args()))
