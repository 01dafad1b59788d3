"""A launch at a glance: usage since it went live, its first day, its busiest minute, milestones."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to, floor_to, format_rfc3339
from tokenpulse.launches.milestones import DEFAULT_THRESHOLDS, find_crossings
from tokenpulse.launches.store import Launch
from tokenpulse.rollups.exact import exact_totals
from tokenpulse.rollups.grains import MINUTE
from tokenpulse.rollups.raw import sum_events
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import busiest_minute

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
    ranges = [(start, until), (start, start + FIRST_DAY)]
    if peak is not None:
        # The peak minute as it counts toward the launch: from the launch, if that cuts it.
        ranges.append((max(start, peak[0]), peak[0] + MINUTE.length))
    since_launch, first_24h, *peak_totals = await exact_totals(connection, selection, ranges)
    return {
        **launch.as_json(),
        "since_launch": since_launch,
        "first_24h": first_24h,
        "peak_minute": None
        if peak is None
        else {
            "start": format_rfc3339(peak[0]),
            "total_tokens": peak[1],
            "cost": peak_totals[0]["cost"],
        },
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
