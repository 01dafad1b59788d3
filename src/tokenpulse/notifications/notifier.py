"""The notifier: searches for crossings every so often, in the worker that folds the rollups."""

import logging
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.clock import Clock, Monotonic
from tokenpulse.database import is_unavailable
from tokenpulse.notifications.detection import Detected, detect

log = logging.getLogger(__name__)


class DetectionObserver(Protocol):
    """What the notifier reports (for metrics)."""

    def detected(self, detected: Detected) -> None: ...

    def detection_failed(self) -> None: ...


class Notifier:
    """Runs a detection every `interval` seconds when asked, on the connection it is given."""

    def __init__(
        self,
        *,
        clock: Clock,
        monotonic: Monotonic,
        interval: float,
        lead: timedelta,
        observer: DetectionObserver,
    ) -> None:
        self._clock = clock
        self._monotonic = monotonic
        self._interval = interval
        self._lead = lead
        self._observer = observer
        self._last = float("-inf")

    async def when_due(self, connection: AsyncConnection) -> None:
        """Detect, if `interval` has passed since the last time; a failure other than the
        database's being unavailable is logged and counted, and the next one tries again."""
        if self._monotonic() - self._last < self._interval:
            return
        self._last = self._monotonic()
        try:
            async with connection.begin():
                # Every search reads one state of the events, as one milestone read does.
                await connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                detected = await detect(connection, now=self._clock(), lead=self._lead)
        except Exception as exc:
            if is_unavailable(exc):
                raise
            self._observer.detection_failed()
            log.error("searching for crossings to notify failed", exc_info=exc)
            return
        self._observer.detected(detected)
