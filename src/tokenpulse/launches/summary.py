"""A launch at a glance: usage since it went live, its first day, its busiest minute, milestones."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to, floor_to, format_rfc3339
from tokenpulse.launches.milestones import DEFAULT_THRESHOLDS, find_crossings
from tokenpulse.launches.store import Launch
from tokenpulse.rollups import MINUTE
from tokenpulse.usage.aggregate import Selection, busiest_minute, sum_rollups
from tokenpulse.usage.cover import cover_buckets
from tokenpulse.usage.raw import MEASURES, sum_events

FIRST_DAY = timedelta(hours=24)


async def launch_summary(
    connection: AsyncConnection, launch: Launch, selection: Selection, *, until: datetime
) -> dict[str, Any]:
    """The summary of `launch` over the usage `selection` matches (its model, maybe one tenant).

    `until` must lie past every stored event; run it in one REPEATABLE READ transaction.
    """
    start = launch.launched_at
    progress = await find_crossings(
        connection,
        selection,
        measure="total_tokens",
        thresholds=DEFAULT_THRESHOLDS,
        since=start,
        until=until,
    )
    peak = await _peak_minute(connection, selection, start, until)
    return {
        **launch.as_json(),
        "since_launch": await exact_totals(connection, selection, start, until),
        "first_24h": await exact_totals(connection, selection, start, start + FIRST_DAY),
        "peak_minute": None
        if peak is None
        else {"start": format_rfc3339(peak[0]), "total_tokens": peak[1]},
        "milestones": [
            {
                "threshold": crossing.threshold,
                "crossed_at": _instant(crossing.crossed_at),
                "seconds_after_launch": None
                if crossing.crossed_at is None
                else (crossing.crossed_at - start).total_seconds(),
                "event_id": crossing.event_id,
            }
            for crossing in progress.crossings
        ],
    }


async def exact_totals(
    connection: AsyncConnection, selection: Selection, start: datetime, end: datetime
) -> dict[str, int]:
    """The six measures over [start, end) for any instants: rollups for the whole minutes
    inside, raw events for the parts of a minute at either edge."""
    first, last = ceil_to(start, MINUTE.length), floor_to(end, MINUTE.length)
    if first >= last:
        return await sum_events(connection, selection, start, end)
    totals = await sum_events(connection, selection, start, first)
    tail = await sum_events(connection, selection, last, end)
    rows = await sum_rollups(connection, selection, cover_buckets([first, last]))
    middle = rows[0].measures if rows else dict.fromkeys(MEASURES, 0)
    return {measure: totals[measure] + middle[measure] + tail[measure] for measure in MEASURES}


async def _peak_minute(
    connection: AsyncConnection, selection: Selection, start: datetime, until: datetime
) -> tuple[datetime, int] | None:
    """The minute with the most total tokens since `start`; a minute that `start` cuts counts
    only what came at or after it."""
    first = ceil_to(start, MINUTE.length)
    busiest = await busiest_minute(connection, selection, (first, until)) if first < until else None
    if first != start:
        head = await sum_events(connection, selection, start, first)
        if head["requests"] and (busiest is None or head["total_tokens"] >= busiest[1]):
            return floor_to(start, MINUTE.length), head["total_tokens"]
    return busiest


def _instant(value: datetime | None) -> str | None:
    return None if value is None else format_rfc3339(value)
