"""Every acknowledged event is stored exactly once, whatever happens to the service or the
database meanwhile: each fault injected while gateways keep sending, then the ledger check."""

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Keys
from tests.faults import postgres_restart_scenario, sigkill_scenario, sigterm_scenario
from tests.gateways import Load, WatchedTransport, gateway_client, gateways, ledger_problems
from tokenpulse.app import create_app
from tokenpulse.ingest.batcher import Batcher, Store
from tokenpulse.ingest.events import Event
from tokenpulse.ingest.writer import EventKey, store_events
from tokenpulse.settings import Settings
from tokenpulse.storage.dedupe import DEFAULT_WINDOW


@pytest.mark.process
async def test_events_acked_between_repeated_sigkills_of_the_service_are_stored_exactly_once(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    load = Load(events=10_000, seed=61)

    problems = await sigkill_scenario(database_url, keys.admin, tmp_path, load, kills=3)

    assert problems == []


@pytest.mark.process
async def test_a_database_crash_mid_flush_answers_503_meanwhile_and_the_service_recovers_alone(
    tmp_path: Path,
) -> None:
    load = Load(events=8_000, seed=62)

    problems = await postgres_restart_scenario(tmp_path, load, restarts=2)

    assert problems == []


@pytest.mark.process
async def test_on_sigterm_requests_in_flight_are_answered_and_stored_before_the_service_exits(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    load = Load(events=8_000, seed=63)

    problems = await sigterm_scenario(database_url, keys.admin, tmp_path, load, stops=1)

    assert problems == []


def acking_before_commit(engine: AsyncEngine) -> Store:
    """A write path that answers for events and then rolls their transaction back."""

    async def store(events: Sequence[Event]) -> set[EventKey]:
        async with engine.connect() as connection:
            new = await store_events(
                connection, events, received_at=datetime.now(UTC), window=DEFAULT_WINDOW
            )
            await connection.rollback()
        return new

    return store


async def test_the_ledger_check_fails_when_events_are_acked_before_their_commit(
    settings: Settings, engine: AsyncEngine, keys: Keys, database_url: str
) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        # The deliberately broken write path replaces the worker's batcher, only in this test.
        broken = Batcher(
            acking_before_commit(engine),
            max_batch_events=settings.batch_max_events,
            max_wait=settings.batch_max_wait.total_seconds(),
            max_concurrent_flushes=settings.batch_max_concurrent_flushes,
            max_queued_events=settings.queue_max_events,
            max_account_events=settings.queue_max_events,
            answer_timeout=settings.ingest_timeout.total_seconds(),
            clock=time.monotonic,
        )
        app.state.batcher = broken
        broken.start()
        transport = WatchedTransport(httpx.ASGITransport(app=app))
        async with gateway_client("http://tokenpulse.test", keys.admin, transport) as client:
            async with gateways(client, Load(events=2_000, seed=64), transport) as sent:
                pass  # no fault to inject: the write path itself loses what it acknowledges
            problems = await ledger_problems(client, database_url, sent.day, sent.ledger)
        await broken.close()

    assert sent.ledger.accepted == 2_000
    totals_disagree = [problem for problem in problems if "the ledger counts" in problem]
    assert [problem.split(":")[0] for problem in totals_disagree] == ["pulse-1", "pulse-1-mini"]
    assert "2,000 acknowledged events are not stored" in "\n".join(problems)
