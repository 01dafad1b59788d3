"""When a running sum of usage crossed a threshold: found through rollups, exact from raw events."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to
from tokenpulse.rollups import GRAINS, MINUTE, Grain
from tokenpulse.usage.aggregate import Selection, bucket_sums
from tokenpulse.usage.cover import cover
from tokenpulse.usage.raw import crossing_event, sum_events

# The crossing event is the first matching event with occurred_at >= since, in (occurred_at,
# event_id) order, at which the running sum reaches the threshold. Day, hour and minute rollups
# find the minute it lies in; only that minute's raw events are read.

DEFAULT_THRESHOLDS = (10**9, 10**10, 10**11, 10**12)


@dataclass(frozen=True)
class Crossing:
    threshold: int
    crossed_at: datetime | None
    """None until the threshold is reached."""
    event_id: str | None


@dataclass(frozen=True)
class Progress:
    current: int
    """The running sum over everything stored from `since` on."""
    crossings: list[Crossing]


async def find_crossings(
    connection: AsyncConnection,
    selection: Selection,
    *,
    measure: str,
    thresholds: Sequence[int],
    since: datetime,
    until: datetime,
) -> Progress:
    """Where the running sum of `measure` from `since` reached each threshold, and where it is.

    `until` must lie past every stored event. Run it in one REPEATABLE READ transaction, so that
    the rollups and raw events it reads agree although events keep arriving.
    """
    pending = sorted(set(thresholds))
    found: dict[int, tuple[datetime, str]] = {}
    running = 0
    # The part of a minute before the first whole one can only be read from raw events.
    aligned = min(ceil_to(since, MINUTE.length), until)
    head = (await sum_events(connection, selection, since, aligned))[measure]
    while pending and running + head >= pending[0]:
        threshold = pending.pop(0)
        event = await crossing_event(
            connection, selection, measure, since, aligned, threshold - running
        )
        assert event is not None, "raw events disagree with their own sum"
        found[threshold] = event
    running += head
    buckets = await bucket_sums(connection, selection, cover(aligned, until), measure)
    for grain, start, value in buckets:
        while pending and running + value >= pending[0]:
            threshold = pending.pop(0)
            found[threshold] = await _descend(
                connection, selection, measure, grain, start, threshold - running
            )
        running += value
    return Progress(
        running,
        [Crossing(t, *found.get(t, (None, None))) for t in thresholds],
    )


async def _descend(
    connection: AsyncConnection,
    selection: Selection,
    measure: str,
    grain: Grain,
    start: datetime,
    needed: int,
) -> tuple[datetime, str]:
    """The event inside the `grain` bucket at `start` at which a sum from its start reaches
    `needed`: through ever finer buckets, then the raw events of one minute."""
    end = start + grain.length
    if grain is MINUTE:
        event = await crossing_event(connection, selection, measure, start, end, needed)
        assert event is not None, "a minute's raw events disagree with its rollup"
        return event
    finer = GRAINS[GRAINS.index(grain) - 1]
    for _, bucket, value in await bucket_sums(
        connection, selection, [(finer, (start, end))], measure
    ):
        if value >= needed:
            return await _descend(connection, selection, measure, finer, bucket, needed)
        needed -= value
    raise AssertionError("finer rollups disagree with a coarser one")
