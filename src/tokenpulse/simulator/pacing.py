"""When events go: a simulated clock running `speedup` times real time but never past now, an
optional cap on events per second, and batches cut from the events that are due until told to
stop."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from datetime import datetime, timedelta

from tokenpulse.clock import Clock, system_clock
from tokenpulse.simulator.launchday import Event, occurred_at

# A partial batch goes out once its first event has waited this long, as a gateway's would.
MAX_BATCH_WAIT_SECONDS = 1.0
# Sleeps are cut into slices this long, so that the clock is read again as now moves on.
LONGEST_SLEEP_SECONDS = 0.5


class SimulatedClock:
    """The simulated instant: `start` plus `speedup` times the real time since the clock was
    made, and never past the wall clock. A speedup of 0 runs it at the wall clock: everything
    already past is due at once."""

    def __init__(
        self,
        start: datetime,
        speedup: float,
        *,
        wall: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.start = start
        self.speedup = speedup
        self._wall = wall
        self._monotonic = monotonic
        self._began = monotonic()

    def now(self) -> datetime:
        wall = self._wall()
        if self.speedup == 0:
            return wall
        simulated = self.start + timedelta(seconds=(self._monotonic() - self._began) * self.speedup)
        return min(simulated, wall)

    def seconds_until(self, instant: datetime) -> float:
        """Real seconds until the clock reaches `instant`; 0 or less when it has."""
        to_wall = (instant - self._wall()).total_seconds()
        if self.speedup == 0:
            return to_wall
        elapsed = self._monotonic() - self._began
        to_simulated = (instant - self.start).total_seconds() / self.speedup - elapsed
        return max(to_wall, to_simulated)

    def caught_up(self) -> bool:
        """Whether the clock has reached the wall clock, and so keeps its pace from now on."""
        if self.speedup == 0:
            return True
        elapsed = self._monotonic() - self._began
        return self.start + timedelta(seconds=elapsed * self.speedup) >= self._wall()


class RateCap:
    """At most `per_second` events per second on average; 0 means no cap."""

    def __init__(
        self, per_second: float, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self._monotonic = monotonic
        self._next = monotonic()

    async def take(self, events: int) -> None:
        if self.per_second <= 0:
            return
        delay = self._next - self._monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._next = max(self._next, self._monotonic()) + events / self.per_second


async def due_batches(
    events: Iterable[Event],
    *,
    clock: SimulatedClock,
    size: int,
    rate: RateCap,
    max_wait: float = MAX_BATCH_WAIT_SECONDS,
    stop: asyncio.Event | None = None,
    on_caught_up: Callable[[], None] | None = None,
) -> AsyncIterator[list[Event]]:
    """`events`, in occurred_at order, in batches of at most `size`, each sent once it is due.

    A batch goes when it is full, or when its first event has waited `max_wait` seconds for the
    next one to fall due. Once `stop` is set, the batch being cut goes and no other, so that
    `events` may go on without end. `on_caught_up` is called once, when the next event lies
    past now.
    """
    batch: list[Event] = []
    first_due = 0.0
    # Reading the clock costs more than an event: read it again only when an event lies past it.
    horizon = clock.now()
    for event in events:
        instant = occurred_at(event)
        if instant > horizon:
            while (wait := clock.seconds_until(instant)) > 0 and not _set(stop):
                if on_caught_up is not None and clock.caught_up():
                    on_caught_up()
                    on_caught_up = None
                flush_at = first_due + max_wait
                if batch and time.monotonic() + wait >= flush_at:
                    await _pause(flush_at - time.monotonic(), stop)
                    await rate.take(len(batch))
                    yield batch
                    batch = []
                else:
                    await _pause(min(wait, LONGEST_SLEEP_SECONDS), stop)
            if _set(stop):
                break
            horizon = clock.now()
        if not batch:
            first_due = time.monotonic()
        batch.append(event)
        if len(batch) == size:
            await rate.take(len(batch))
            yield batch
            batch = []
            # Making events never awaits: let the senders run between batches.
            await asyncio.sleep(0)
            if _set(stop):
                break
    if batch:
        await rate.take(len(batch))
        yield batch


def _set(stop: asyncio.Event | None) -> bool:
    return stop is not None and stop.is_set()


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    """Sleep `seconds`, or less should `stop` be set meanwhile."""
    if stop is None:
        await asyncio.sleep(max(seconds, 0))
        return
    with suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0)):
            await stop.wait()
