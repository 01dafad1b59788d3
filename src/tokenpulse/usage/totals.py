"""`/v1/totals`: the seven measures and the cost per group over one range, to the minute."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.instants import ceil_to, floor_to, format_rfc3339
from tokenpulse.rollups.costs import priced_cover
from tokenpulse.rollups.grains import MINUTE
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import TooManyGroups, sum_rollups

WINDOWS = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def totals_range(
    *, start: datetime | None, end: datetime | None, window: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The half-open, minute-aligned range counted: `start` floored and `end` raised.

    Without `end` the range runs to the end of the minute that holds `now`, so that it counts
    everything so far, including events stamped at `now` itself.
    """
    if window is not None:
        if start is not None or end is not None:
            raise InvalidParameters.of("window", "give either window or start (and end), not both")
        start = now - WINDOWS[window]
    elif start is None:
        raise InvalidParameters.of("start", "is required unless window is given")
    if end is not None and end < start:
        raise InvalidParameters.of("end", "must not be before start")
    counted_end = (
        ceil_to(end, MINUTE.length)
        if end is not None
        else floor_to(now, MINUTE.length) + MINUTE.length
    )
    counted_start = floor_to(start, MINUTE.length)
    if counted_end < counted_start:
        raise InvalidParameters.of("start", "must not be after now")
    return counted_start, counted_end


async def usage_totals(
    connection: AsyncConnection,
    selection: Selection,
    *,
    start: datetime,
    end: datetime,
    max_groups: int,
) -> dict[str, Any]:
    spans, priced = await priced_cover(connection, selection, [start, end])
    try:
        groups = await sum_rollups(connection, selection, spans, most=max_groups, priced=priced)
    except TooManyGroups as refused:
        raise InvalidParameters.of(
            "group_by",
            f"the answer would hold more than {refused.most:,} groups "
            "(TOKENPULSE_MAX_GROUPS); narrow it with filters (tenant, project, model, "
            "api_key_id), group by fewer dimensions, or ask for a shorter range",
        ) from None
    return {
        "start": format_rfc3339(start),
        "end": format_rfc3339(end),
        "results": [group for _, group in groups],
    }
