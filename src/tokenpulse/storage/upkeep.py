"""The storage's own upkeep, done by one worker of the database (the elected materialiser):
days created ahead of the events they will hold, and the dedupe window moved on."""

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.clock import Clock, Monotonic
from tokenpulse.database import is_unavailable
from tokenpulse.storage.dedupe import advance_window
from tokenpulse.storage.partitions import ensure_partitions

log = logging.getLogger(__name__)

UPKEEP_SECONDS = 60.0
"""How often upkeep runs: days exist a week ahead, and a slot lasts the dedupe window."""


class Upkeep:
    def __init__(
        self,
        *,
        clock: Clock,
        monotonic: Monotonic,
        max_event_age: timedelta,
        max_event_lead: timedelta,
        window: timedelta,
        interval: float = UPKEEP_SECONDS,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._max_event_age = max_event_age
        self._max_event_lead = max_event_lead
        self._window = window
        self._interval = interval
        self._last = float("-inf")

    async def when_due(self, connection: AsyncConnection) -> None:
        """Do the upkeep, if `interval` has passed since it was last done. A failure is logged
        and costs the fold nothing: the next round tries again."""
        if self._monotonic() - self._last < self._interval:
            return
        self._last = self._monotonic()
        try:
            await self.run(connection)
        except Exception as exc:
            _log_failure("storage upkeep", exc)

    async def at_start(self, engine: AsyncEngine) -> None:
        """Make the days due before serving, so that the first events find theirs; a failure
        is logged, and the elected materialiser tries again."""
        try:
            async with engine.connect() as connection:
                await self._make_days(connection)
        except Exception as exc:
            _log_failure("making the partitions due at start", exc)

    async def run(self, connection: AsyncConnection) -> None:
        """Make the days due and move the window on if due, now; `connection` must not be in
        a transaction."""
        await self._make_days(connection)
        async with connection.begin():
            opened = await advance_window(connection, now=self._clock(), window=self._window)
        if opened is not None:
            log.info("the dedupe window moved on to slot %d", opened.number)

    async def _make_days(self, connection: AsyncConnection) -> None:
        created = await ensure_partitions(
            connection, now=self._clock(), behind=self._max_event_age, ahead=self._max_event_lead
        )
        if created:
            log.info("created the partitions %s", ", ".join(created))


def _log_failure(what: str, exc: Exception) -> None:
    if is_unavailable(exc):
        log.warning("%s failed (%s); it runs again", what, type(exc).__name__)
    else:
        log.error("%s failed", what, exc_info=exc)
