"""When a running sum of usage crossed a threshold: found through rollups, exact from raw events."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.decimals import EXACT
from tokenpulse.instants import ceil_to
from tokenpulse.rollups.costs import COST, price_bounds
from tokenpulse.rollups.cover import Span, cover_split
from tokenpulse.rollups.grains import HOUR, MINUTE
from tokenpulse.rollups.raw import crossing_events, event_cost, sum_events
from tokenpulse.rollups.selection import Selection
from tokenpulse.rollups.sums import bucket_sums, crossing_buckets

# The crossing event is the first matching event with occurred_at >= since, in (occurred_at,
# event_id) order, at which the running sum reaches the threshold. Rollups over the whole range
# find the bucket it lies in, then hour and minute rollups the hour and minute inside, and only
# that minute's raw events are read: each step one round trip for every threshold at once.

DEFAULT_THRESHOLDS = (10**9, 10**10, 10**11, 10**12)


def stored_until(now: datetime, lead: timedelta) -> datetime:
    """An instant past every stored event: none may lie further ahead than the accepted lead."""
    return ceil_to(now + lead, MINUTE.length) + MINUTE.length


Sum = int | Decimal
"""A running sum: of a measure, an integer; of cost, a decimal in millionths of the currency."""


@dataclass(frozen=True)
class Crossing:
    threshold: Sum
    crossed_at: datetime | None
    """None until the threshold is reached."""
    event_id: str | None
    value_at_crossing: Sum | None = None
    """The running sum with the crossing event: the threshold or more."""


@dataclass(frozen=True)
class Progress:
    current: Sum | None
    """The running sum over everything stored from `since` on; None for cost when nothing in it
    is priced."""
    crossings: list[Crossing]


async def find_crossings(
    connection: AsyncConnection,
    selection: Selection,
    *,
    measure: str,
    thresholds: Sequence[Sum],
    since: datetime,
    until: datetime,
) -> Progress:
    """Where the running sum of `measure` (a measure, or COST) from `since` reached each
    threshold, and where it is.

    `until` must lie past every stored event. Run it in one REPEATABLE READ transaction, so that
    the rollups and raw events it reads agree although events keep arriving.
    """
    with localcontext(EXACT):
        pending = sorted(set(thresholds))
        # Where each reached threshold lies: the span of its bucket (or of the raw events before the
        # first whole minute), and the sum still needed from its start.
        located: dict[Sum, tuple[Span, Sum]] = {}
        running: Sum = 0
        priced = False
        # The part of a minute before the first whole one can only be read from raw events.
        aligned = min(ceil_to(since, MINUTE.length), until)
        head: Sum | None
        if measure == COST:
            starts = await price_bounds(connection, selection, since, until)
            if starts is None:
                # No version of a model it counts is in effect before `until`: nothing is priced.
                return Progress(None, [Crossing(t, None, None) for t in thresholds])
            head = await event_cost(connection, selection, since, aligned)
            # No bucket read for cost may hold the start of a price version: each is priced by one.
            # Versions start at whole minutes, so none starts between `since` and `aligned`.
            boundaries = starts
        else:
            head = (await sum_events(connection, selection, since, aligned))[measure]
            boundaries = []
        parts = cover_split(aligned, until, boundaries)
        buckets = [
            ((since, aligned), head),
            *(
                ((start, start + grain.length), value)
                for grain, start, value in await bucket_sums(connection, selection, parts, measure)
            ),
        ]
        for span, value in buckets:
            if value is None:
                continue
            priced = True
            while pending and running + value >= pending[0]:
                threshold = pending.pop(0)
                located[threshold] = (span, threshold - running)
            running += value
        # Days open into hours, then hours into minutes: 24 and 60 rows, not a day's 1,440 minutes.
        for finer in (HOUR, MINUTE):
            coarser = {
                threshold: (span, needed)
                for threshold, (span, needed) in located.items()
                if span[1] - span[0] > finer.length
            }
            inside = await crossing_buckets(
                connection, selection, measure, finer, list(coarser.values())
            )
            for (threshold, (_, needed)), bucket in zip(coarser.items(), inside, strict=True):
                assert bucket is not None, "finer rollups disagree with a coarser one"
                start, before = bucket
                located[threshold] = ((start, start + finer.length), needed - before)
        events = await crossing_events(connection, selection, measure, list(located.values()))
        found: dict[Sum, Crossing] = {}
        for (threshold, (_, needed)), event in zip(located.items(), events, strict=True):
            assert event is not None, "raw events disagree with their rollups"
            crossed_at, event_id, reached = event
            value = threshold - needed + reached
            found[threshold] = Crossing(threshold, crossed_at, event_id, value)
        return Progress(
            running if priced or measure != COST else None,
            [found.get(t) or Crossing(t, None, None) for t in thresholds],
        )
