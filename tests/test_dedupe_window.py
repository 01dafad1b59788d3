"""An event is stored once per tenant for the dedupe window, whatever else it says: as long as
it may be accepted again after it was first received."""

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import Clock, Ticker
from tests.factories import event
from tests.gateways import until
from tests.storage import (
    LEAD,
    MAX_AGE,
    START,
    WINDOW,
    clock,
    database,
    fetch,
    requests,
    send,
    serving,
    stored,
)
from tokenpulse.database import async_url, causes, sqlstate_of
from tokenpulse.storage.dedupe import advance_window, hold_window
from tokenpulse.storage.upkeep import UPKEEP_SECONDS

__all__ = ["clock", "database"]

LOCK_NOT_AVAILABLE = "55P03"


async def test_an_id_sent_again_saying_anything_else_is_a_duplicate_across_days(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    first = event(event_id="req-1", at=START - timedelta(minutes=1), input_tokens=5)
    again = [
        event(event_id="req-1", at=START - timedelta(days=20), model="m-small"),
        event(event_id="req-1", at=START + LEAD, tenant="acme", project="other"),
        event(event_id="req-1", at=START - MAX_AGE, output_tokens=1),
    ]
    async with serving(database, clock, monotonic) as client:
        assert (await send(client, first))["accepted"] == 1
        answers = [await send(client, each) for each in again]
        # A batch holding one id twice stores the first only.
        both = await send(
            client, event(event_id="req-2", at=START), event(event_id="req-2", at=START - LEAD)
        )
        other_tenant = await send(client, event(event_id="req-1", at=START, tenant="globex"))

        assert [a["duplicates"] for a in answers] == [1, 1, 1]
        assert (both["accepted"], both["duplicates"]) == (1, 1)
        assert other_tenant["accepted"] == 1
        assert await stored(database, "req-1") == 2
        assert await requests(client) == 3


async def test_an_id_sent_again_just_inside_the_window_is_a_duplicate_just_outside_new(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    async with serving(database, clock, monotonic) as client:
        assert (await send(client, event(event_id="req-1", at=START)))["accepted"] == 1

        later = START + timedelta(days=1)
        clock.now = START + WINDOW - timedelta(seconds=1)
        inside = await send(client, event(event_id="req-1", at=later))
        # Past the window, but before the upkeep has moved it on: still a duplicate.
        clock.now = START + WINDOW + timedelta(seconds=1)
        not_moved_yet = await send(client, event(event_id="req-1", at=later))
        await move_on(database, clock, monotonic, clock.now)
        outside = await send(client, event(event_id="req-1", at=later))
        once_more = await send(client, event(event_id="req-1", at=later))

    assert (inside["duplicates"], not_moved_yet["duplicates"]) == (1, 1)
    assert (outside["accepted"], once_more["duplicates"]) == (1, 1)
    assert await stored(database, "req-1") == 2


async def slot_of(database: str) -> int:
    slot: int = (await fetch(database, "SELECT slot FROM dedupe_window"))[0][0]
    return slot


async def move_on(database: str, clock: Clock, monotonic: Ticker, to: datetime) -> None:
    """Set the clock to `to` and wait for the materialiser's upkeep to have run there."""
    slot = await slot_of(database)
    clock.now = to
    monotonic.advance(UPKEEP_SECONDS)

    async def moved() -> bool:
        return await slot_of(database) == slot + 1

    await until(moved, "the dedupe window to move on")


async def test_keys_of_the_slot_before_count_for_the_rest_of_their_window(
    database: str, clock: Clock, monotonic: Ticker
) -> None:
    received = START + timedelta(days=20)
    async with serving(database, clock, monotonic) as client:
        clock.now = received
        first = event(event_id="req-1", at=START + timedelta(days=1))
        assert (await send(client, first))["accepted"] == 1

        # The upkeep opens slot 2: req-1's key is in the slot before.
        await move_on(database, clock, monotonic, START + WINDOW)
        later = START + WINDOW
        clock.now = received + WINDOW - timedelta(seconds=1)
        inside = await send(client, event(event_id="req-1", at=later))
        clock.now = received + WINDOW + timedelta(seconds=1)
        outside = await send(client, event(event_id="req-1", at=later))

        # Slot 3 opens, and slot 1 goes, whole: its keys are all past the window.
        await move_on(database, clock, monotonic, START + 2 * WINDOW)
        kept = {row[0] for row in await fetch(database, "SELECT relname FROM pg_class")}

    assert (inside["duplicates"], outside["accepted"]) == (1, 1)
    assert {"event_key_2", "event_key_3"} <= kept
    assert "event_key_1" not in kept


async def test_the_window_moves_on_only_once_no_store_is_running(database: str) -> None:
    engine = create_async_engine(async_url(database))
    try:
        async with engine.connect() as storing, engine.connect() as upkeep:
            await storing.begin()
            await hold_window(storing)
            # While a store runs, the change gives up at once, and leaves the window as it was.
            with pytest.raises(DBAPIError) as refused:
                await move(upkeep, START + WINDOW)
            await storing.commit()
            opened = await move(upkeep, START + WINDOW)
    finally:
        await engine.dispose()

    assert any(sqlstate_of(cause) == LOCK_NOT_AVAILABLE for cause in causes(refused.value))
    assert opened == 2
    assert await slot_of(database) == 2


async def move(connection: Any, now: datetime) -> int | None:
    async with connection.begin():
        opened = await advance_window(connection, now=now, window=WINDOW)
    return None if opened is None else opened.number
