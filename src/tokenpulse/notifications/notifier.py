"""The notifier: searches for crossings every so often, in the worker that folds the rollups."""

import logging
import time
from datetime import timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.clock import Clock, Monotonic
from tokenpulse.database import is_unavailable
from tokenpulse.notifications.detection import Detected, detect

log = logging.getLogger(__name__)


class DetectionObserver(Protocol):
    """What the notifier reports (for metrics)."""

    def detected(self, detected: Detected, seconds: float) -> None: ...

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
        """Detect, if `interval` has passed since the last time. A failure is logged and
        counted, and costs the fold nothing: the next detection tries again."""
        if self._monotonic() - self._last < self._interval:
            return
        self._last = self._monotonic()
        # A figure of real time, even where the service's clock is set by a test.
        started = time.perf_counter()
        try:
            async with connection.begin():
                # Every search reads one state of the events, as one milestone read does.
                await connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                detected = await detect(connection, now=self._clock(), lead=self._lead)
        except Exception as exc:
            self._observer.detection_failed()
            if is_unavailable(exc):
                log.warning(
                    "searching for crossings failed (%s); it runs again", type(exc).__name__
                )
            else:
                log.error("searching for crossings to notify failed", exc_info=exc)
            return
        self._observer.detected(detected, time.perf_counter() - started)
