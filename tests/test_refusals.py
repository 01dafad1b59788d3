"""Refusing a key costs the database little: malformed keys never reach it, unknown ids are
remembered, and an address that keeps failing is answered 429 without a lookup."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import Keys, Ticker, bearer, scratch_database
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.keys.registry import KeyRegistry
from tokenpulse.keys.store import create_key, find_key
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.ratelimit import TokenBuckets
from tokenpulse.refusals import FAILURE_BURST
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

ATTACKER = ("198.51.100.7", 40000)
ELSEWHERE = ("192.0.2.10", 40001)
TOTALS = "/v1/totals?window=1h"


def unknown_token() -> str:
    """A key that looks right, with an id that no key has."""
    return f"tp_{secrets.token_hex(8)}_{'A' * 43}"


def quiet(database_url: str, **changes: Any) -> Settings:
    # No per-key rate limits, and a materialiser that keeps still: only requests use the database.
    return Settings(
        database_url=database_url,
        rate_limit_ingest=0,
        rate_limit_read=0,
        rate_limit_admin=0,
        materialise_interval=3600,
        **changes,
    )


@asynccontextmanager
async def client_at(
    app: Any, address: tuple[str, int], token: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` whose requests come from `address`."""
    transport = httpx.ASGITransport(app=app, client=address)
    headers = bearer(token) if token is not None else {}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tokenpulse.test", headers=headers
    ) as client:
        yield client


@contextmanager
def database_visits(app: Any) -> Iterator[list[object]]:
    """Every connection the app's request pool hands out meanwhile, one entry each."""
    engine: AsyncEngine = app.state.engine
    pool = engine.sync_engine.pool
    visits: list[object] = []

    def record(*args: object) -> None:
        visits.append(args[0])

    event.listen(pool, "checkout", record)
    try:
        yield visits
    finally:
        event.remove(pool, "checkout", record)


async def transactions(server: asyncpg.Connection, database: str) -> int:
    """The transactions PostgreSQL counted in `database`, once its sessions have all ended and
    reported their figures."""
    deadline = time.monotonic() + 15
    last = None
    while time.monotonic() < deadline:
        sessions = await server.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        counted = await server.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            database,
        )
        if sessions == 0 and counted == last:
            return int(counted)
        last = counted
        await asyncio.sleep(0.2)
    raise AssertionError(f"the sessions on {database} did not end")


async def test_a_burst_of_unknown_keys_costs_few_transactions_while_readers_are_answered(
    server_url: str,
) -> None:
    rounds, per_round = 10, 100
    async with scratch_database(server_url) as url:
        engine = create_async_engine(async_url(url))
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
            reader = await create_key(connection, name="dashboard", scope=Scope.READ, tenant=None)
        await engine.dispose()
        server = await asyncpg.connect(server_url)
        try:
            database = make_url(url).database
            assert database is not None
            before = await transactions(server, database)
            # No failure is earned back while the attack lasts, however long it takes.
            app = create_app(quiet(url), monotonic=Ticker())
            refusals: list[httpx.Response] = []
            reads: list[httpx.Response] = []
            async with (
                app.router.lifespan_context(app),
                client_at(app, ATTACKER) as attacker,
                # A reader behind the attacker's own address (one NAT), and one elsewhere.
                client_at(app, ATTACKER, reader.token) as neighbour,
                client_at(app, ELSEWHERE, reader.token) as elsewhere,
            ):
                # The readers were at work before the attack began.
                assert (await neighbour.get(TOTALS)).status_code == 200
                for _ in range(rounds):
                    answers = await asyncio.gather(
                        *(
                            attacker.get(TOTALS, headers=bearer(unknown_token()))
                            for _ in range(per_round)
                        ),
                        neighbour.get(TOTALS),
                        elsewhere.get(TOTALS),
                    )
                    refusals += answers[:-2]
                    reads += answers[-2:]
            spent = await transactions(server, database) - before
        finally:
            await server.close()

    # Only the allowance of failures asks the database (two transactions each), and each read a
    # few more: a refusal that cost a lookup each would have made about 2,000 for this burst.
    assert spent < len(refusals) / 4, spent
    assert [read.status_code for read in reads] == [200] * 2 * rounds
    statuses = [refusal.status_code for refusal in refusals]
    assert statuses.count(401) == FAILURE_BURST
    assert statuses.count(429) == len(refusals) - FAILURE_BURST
    assert all(r.headers["retry-after"].isdigit() for r in refusals if r.status_code == 429)


async def test_a_malformed_or_missing_key_never_reaches_the_database(
    database_url: str, db: AsyncEngine
) -> None:
    app = create_app(quiet(database_url))
    async with app.router.lifespan_context(app):
        with database_visits(app) as visits:
            statuses = []
            for n in range(100):
                # From many addresses, so that none is refused for failing too often.
                async with client_at(app, (f"203.0.113.{n}", 40000)) as client:
                    for headers in ({}, bearer("not-a-key"), bearer("tp_short_secret")):
                        statuses.append((await client.get(TOTALS, headers=headers)).status_code)

    assert statuses == [401] * 300
    assert visits == []


async def test_an_unknown_id_is_remembered_longer_than_keys_so_repeating_it_costs_one_lookup(
    database_url: str, db: AsyncEngine
) -> None:
    token = unknown_token()
    monotonic = Ticker()
    app = create_app(quiet(database_url, key_cache_seconds=0.1), monotonic=monotonic)
    async with app.router.lifespan_context(app):
        with database_visits(app) as visits:
            statuses = []
            for n in range(200):
                if n == 100:
                    monotonic.advance(0.3)  # past the key cache
                async with client_at(app, (f"203.0.113.{n}", 40000), token) as client:
                    statuses.append((await client.get(TOTALS)).status_code)

    assert statuses == [401] * 200
    assert len(visits) == 1


async def test_an_address_past_its_failures_gets_429_without_a_lookup_but_known_keys_still_work(
    database_url: str, keys: Keys
) -> None:
    reader = await keys.create("read")
    newcomer = await keys.create("read")
    app = create_app(quiet(database_url), monotonic=Ticker())
    async with app.router.lifespan_context(app), client_at(app, ATTACKER) as client:
        assert (await client.get(TOTALS, headers=bearer(reader))).status_code == 200
        with database_visits(app) as visits:
            answers = [
                await client.get(TOTALS, headers=bearer(unknown_token()))
                for _ in range(FAILURE_BURST + 30)
            ]
            malformed = await client.get(TOTALS, headers=bearer("not-a-key"))
            lookups = len(visits)
        known = await client.get(TOTALS, headers=bearer(reader))
        new = await client.get(TOTALS, headers=bearer(newcomer))

    statuses = [answer.status_code for answer in answers]
    assert statuses == [401] * FAILURE_BURST + [429] * 30
    # Only the refusals answered 401 asked the database; no 429 did.
    assert lookups == statuses.count(401)
    refused = answers[-1]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limited"
    assert malformed.status_code == 429
    # A key this worker has seen is still admitted from the address; one it has never seen
    # waits like the unknown ones, since telling them apart would take a lookup.
    assert known.status_code == 200
    assert new.status_code == 429


async def test_the_addresses_of_one_ipv6_network_share_one_allowance_of_failures(
    database_url: str, db: AsyncEngine
) -> None:
    app = create_app(quiet(database_url), monotonic=Ticker())
    statuses = []
    async with app.router.lifespan_context(app):
        for n in range(FAILURE_BURST + 20):
            address = (f"2001:db8:0:7::{n + 1:x}", 40000)
            async with client_at(app, address, unknown_token()) as client:
                statuses.append((await client.get(TOTALS)).status_code)
        async with client_at(app, ("2001:db8:0:8::1", 40000), unknown_token()) as other:
            next_network = (await other.get(TOTALS)).status_code

    assert statuses == [401] * FAILURE_BURST + [429] * 20
    assert next_network == 401


async def test_random_ids_and_addresses_cannot_grow_what_a_worker_remembers(
    db: AsyncEngine,
) -> None:
    async def find(key_id: str) -> Any:
        async with db.connect() as connection:
            return await find_key(connection, key_id)

    registry = KeyRegistry(find, ttl=0.5, clock=Ticker(), max_unknown=100)
    failures = TokenBuckets(1, FAILURE_BURST, clock=Ticker(), max_keys=100)
    for n in range(300):
        assert await registry.lookup(secrets.token_hex(8)) is None
        failures.take(f"203.0.{n // 256}.{n % 256}")

    assert len(registry) == 100
    assert len(failures) == 100
