"""The dedupe window: an event is stored once per tenant, whatever else it says, for 35 days.

Every store records each new event's key, `(tenant, event_id)`, in `event_key`, in the current
slot, with when it was received. A key is new unless it was received less than DEDUPE_WINDOW
ago, which stores find in the current slot (its primary key) or the slot before. A slot is
current for at least DEDUPE_WINDOW, so the one before it holds every key of the window that
the current slot lacks, and the slot before that none: `advance_window` drops it whole when
it opens the next, never deleting a row.

A slot changes only while no store runs: each store holds DEDUPE_LOCK shared for its
transaction, and the change takes it alone. A store therefore never adds to a slot that another
store, already past it, no longer reads.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.tables import dedupe_window, event_key

DEDUPE_WINDOW = timedelta(days=35)
"""As long as the oldest `occurred_at` accepted by default: a gateway resending any event it
may still send finds it stored."""
DEDUPE_LOCK = 0x746F6B656E64  # "tokend": any constant every instance shares
LOCK_TIMEOUT = "5s"
"""How long a slot change waits for the stores running to finish; it tries again later."""


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


async def advance_window(connection: AsyncConnection, *, now: datetime) -> Slot | None:
    """Open the next slot, and drop the one before the current, if the current is as old as
    the window; the slot opened, or None when it is not due. Runs in the caller's transaction.
    """
    if now - (await current_slot(connection)).started_at < DEDUPE_WINDOW:
        return None
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({DEDUPE_LOCK})")
    # Read again under the lock: another worker may have opened it while this one waited.
    slot = await current_slot(connection)
    if now - slot.started_at < DEDUPE_WINDOW:
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
