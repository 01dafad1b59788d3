"""Raw events are stored a partition a day (UTC), each created before any event can need it.

Days are created, never assumed: `ensure_partitions` makes every day an event accepted at `now`
can fall on, from the oldest `occurred_at` accepted to a week past the newest. Serving starts by
running it, and the elected materialiser runs it again every minute.
"""

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.database import causes, sqlstate_of
from tokenpulse.storage.dedupe import SLOT_PARTITION
from tokenpulse.tables import usage_event

CHECK_VIOLATION = "23514"

BEFORE_THE_DAYS = "usage_event_legacy"
"""The partition that holds every event before the first day's partition: on a database that
was upgraded to partitions, the table of before, with the events stored before the upgrade and
those that occurred before the second midnight after it; on a database created partitioned,
none. Its primary key is checked by every store, as the slots of event_key are."""

DAY_PREFIX = f"{usage_event.name}_"
DAY_PARTITION = re.compile(rf"^{DAY_PREFIX}(\d{{8}})$")
PARTITIONS_AHEAD = timedelta(days=7)
"""How far past the newest `occurred_at` accepted the days already exist: a week in which the
materialiser may be down and no store lacks a partition."""
PARTITIONS_LOCK = 0x746F6B656E72  # "tokenr": any constant every instance shares
DAY_LOCK_TIMEOUT = "2s"
"""How long creating a day may wait for its lock: attaching waits for no reader or writer, but
it must not queue behind another schema change and keep the stores behind it waiting."""


def partition_name(day: date) -> str:
    return f"{DAY_PREFIX}{day:%Y%m%d}"


def is_partition(name: str) -> bool:
    """Whether `name` is one of the tables that partitions create, which the schema declares
    only through their parents."""
    return (
        name == BEFORE_THE_DAYS
        or DAY_PARTITION.match(name) is not None
        or SLOT_PARTITION.match(name) is not None
    )


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


async def ensure_partitions(
    connection: AsyncConnection,
    *,
    now: datetime,
    behind: timedelta,
    ahead: timedelta = timedelta(0),
) -> list[str]:
    """Create the day partitions that events accepted at `now` may need: those that occurred
    `behind` it at most, `ahead` of it at most, and PARTITIONS_AHEAD more. Returns the names
    created.

    `connection` must not be in a transaction: each day is created in one of its own.
    """
    first = (now - behind).astimezone(UTC).date()
    last = (now + ahead + PARTITIONS_AHEAD).astimezone(UTC).date()
    return await make_days(
        connection, [first + timedelta(days=n) for n in range((last - first).days + 1)]
    )


async def make_days(connection: AsyncConnection, days: Iterable[date]) -> list[str]:
    """Create the partitions of `days` that do not exist yet (a day before the days start is
    held by BEFORE_THE_DAYS); returns the names created. `connection` must not be in a
    transaction: each day is created in one of its own."""
    async with connection.begin():
        first_day = await days_start(connection)
        existing = await day_partitions(connection)
    created = []
    for day in sorted(set(days)):
        name = partition_name(day)
        if day >= first_day and name not in existing:
            async with connection.begin():
                if await _create_day(connection, day):
                    created.append(name)
    return created


def lacks_partition(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL refusing a row that no partition of the raw events takes: a
    check violation of no constraint (a check of a constraint names it)."""
    return any(
        sqlstate_of(cause) == CHECK_VIOLATION and getattr(cause, "constraint_name", "") is None
        for cause in causes(exc)
    )


async def days_start(connection: AsyncConnection) -> date:
    """The first day that has, or may have, a partition of its own: where BEFORE_THE_DAYS ends."""
    bound = await connection.scalar(
        text(
            "SELECT (regexp_match(pg_get_expr(relpartbound, oid), $$TO \\('([^']+)'\\)$$))[1]"
            "::timestamptz FROM pg_class WHERE oid = to_regclass(:name)"
        ),
        {"name": BEFORE_THE_DAYS},
    )
    assert isinstance(bound, datetime), f"{BEFORE_THE_DAYS} is not a partition of usage_event"
    return bound.astimezone(UTC).date()


async def day_partitions(connection: AsyncConnection) -> set[str]:
    rows = await connection.execute(
        text(
            "SELECT relid::regclass::text FROM pg_partition_tree(:parent)"
            " WHERE relid <> :parent ::regclass"
        ),
        {"parent": usage_event.name},
    )
    return {name for (name,) in rows if DAY_PARTITION.match(name)}


async def _create_day(connection: AsyncConnection, day: date) -> bool:
    """Create `day`'s partition unless another instance just did; False when it had."""
    name = partition_name(day)
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{DAY_LOCK_TIMEOUT}'")
    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PARTITIONS_LOCK})
    if await connection.scalar(text("SELECT to_regclass(:name)"), {"name": name}) is not None:
        return False
    # Created alone, then attached: creating a partition in place would lock the parent against
    # every reader and writer, attaching one locks it only against other schema changes.
    await connection.exec_driver_sql(
        f"CREATE TABLE {name} (LIKE {usage_event.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    start, end = midnight(day), midnight(day + timedelta(days=1))
    await connection.exec_driver_sql(
        f"ALTER TABLE {usage_event.name} ATTACH PARTITION {name}"
        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )
    return True
