"""The dedupe window: an event is stored once per tenant, whatever else it says, for as long as
it may be accepted again (`window_for`: 35 days and 5 minutes by default).

Every store records each new event's key, `(tenant, event_id)`, in `event_key`, in the current
slot, with when it was received. A key is new unless it was received less than the window ago,
which stores find in the current slot (its primary key), in the slot before, or among the
events stored before partitioning (`usage_event_legacy`'s primary key). A slot is current for
at least the window, so the one before it holds every key of the window that the current slot
lacks, and the slot before that none: `advance_window` drops it whole when it opens the next,
never deleting a row. Until it does, a key of the current slot counts whatever its age: the
window is exact but for the minute or so a due change may wait for the materialiser's upkeep.

A slot changes only while no store runs: each store holds DEDUPE_LOCK shared for its
transaction, and the change takes it alone. A store therefore never adds to a slot that another
store, already past it, no longer reads.
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.settings import Settings
from tokenpulse.tables import dedupe_window, event_key

DEDUPE_LOCK = 0x746F6B656E64  # "tokend": any constant every instance shares
SLOT_LOCK_TIMEOUT = "100ms"
"""How long a slot change waits for the stores running to finish, every store that starts
meanwhile waiting behind it; it tries again a minute later."""


def window_for(settings: Settings) -> timedelta:
    """As long as an event received now may be accepted again: an `occurred_at` as far ahead as
    accepted stays acceptable until that long after. A gateway's retry of any event it may
    still send is a duplicate. Every instance of a database must share the accepted window."""
    return settings.max_event_age + settings.max_event_lead


DEFAULT_WINDOW = window_for(Settings.model_construct())
"""The window with the accepted window's defaults (35 days and 5 minutes)."""


SLOT_PARTITION = re.compile(rf"^{event_key.name}_(\d+)$")


def slot_partition(slot: int) -> str:
    return f"{event_key.name}_{slot}"


async def hold_window(connection: AsyncConnection) -> None:
    """Keep the slot from changing until `connection`'s transaction ends."""
    await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({DEDUPE_LOCK})")


@dataclass(frozen=True)
class Slot:
    number: int
    started_at: datetime


async def current_slot(connection: AsyncConnection) -> Slot:
    number, started_at = (
        await connection.execute(text(f"SELECT slot, started_at FROM {dedupe_window.name}"))
    ).one()
    return Slot(number, started_at)


async def advance_window(
    connection: AsyncConnection, *, now: datetime, window: timedelta
) -> Slot | None:
    """Open the next slot, and drop the one before the current, if the current is as old as
    `window`; the slot opened, or None when it is not due. Runs in the caller's transaction.
    """
    if now - (await current_slot(connection)).started_at < window:
        return None
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{SLOT_LOCK_TIMEOUT}'")
    await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({DEDUPE_LOCK})")
    # Read again under the lock: another worker may have opened it while this one waited.
    slot = await current_slot(connection)
    if now - slot.started_at < window:
        return None
    opened = Slot(slot.number + 1, now)
    # No store runs until this commits: the parent's locks wait for no one.
    await connection.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {slot_partition(opened.number)}"
        f" PARTITION OF {event_key.name} FOR VALUES IN ({opened.number})"
    )
    await connection.execute(
        text(f"UPDATE {dedupe_window.name} SET slot = :slot, started_at = :now"),
        {"slot": opened.number, "now": now},
    )
    await connection.exec_driver_sql(f"DROP TABLE IF EXISTS {slot_partition(slot.number - 1)}")
    return opened
