"""When a running sum of usage crossed a threshold: found through rollups, exact from raw events."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import ceil_to
from tokenpulse.rollups.cover import Span, cover
from tokenpulse.rollups.grains import HOUR, MINUTE, Grain
from tokenpulse.rollups.raw import crossing_events, sum_events
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import bucket_sums, crossing_buckets

# The crossing event is the first matching event with occurred_at >= since, in (occurred_at,
# event_id) order, at which the running sum reaches the threshold. Rollups over the whole range
# find the bucket it lies in, then hour and minute rollups the hour and minute inside, and only
# that minute's raw events are read: each step one round trip for every threshold at once.

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
    # Where each reached threshold lies: the grain of its bucket (a minute's for the raw events
    # before the first whole minute), the bucket's span, and the sum still needed from its start.
    located: dict[int, tuple[Grain, Span, int]] = {}
    running = 0
    # The part of a minute before the first whole one can only be read from raw events.
    aligned = min(ceil_to(since, MINUTE.length), until)
    head = (await sum_events(connection, selection, since, aligned))[measure]
    while pending and running + head >= pending[0]:
        threshold = pending.pop(0)
        located[threshold] = (MINUTE, (since, aligned), threshold - running)
    running += head
    buckets = await bucket_sums(connection, selection, cover(aligned, until), measure)
    for grain, start, value in buckets:
        while pending and running + value >= pending[0]:
            threshold = pending.pop(0)
            located[threshold] = (grain, (start, start + grain.length), threshold - running)
        running += value
    # Days open into hours, then hours into minutes: 24 and 60 rows, not a day's 1,440 minutes.
    for finer in (HOUR, MINUTE):
        coarser = {
            threshold: (span, needed)
            for threshold, (grain, span, needed) in located.items()
            if grain.length > finer.length
        }
        inside = await crossing_buckets(
            connection, selection, measure, finer, list(coarser.values())
        )
        for (threshold, (_, needed)), bucket in zip(coarser.items(), inside, strict=True):
            assert bucket is not None, "finer rollups disagree with a coarser one"
            start, before = bucket
            located[threshold] = (finer, (start, start + finer.length), needed - before)
    events = await crossing_events(
        connection, selection, measure, [(span, needed) for _, span, needed in located.values()]
    )
    found = dict(zip(located, events, strict=True))
    assert None not in events, "raw events disagree with their rollups"
    return Progress(
        running,
        [Crossing(t, *(found.get(t) or (None, None))) for t in thresholds],
    )
