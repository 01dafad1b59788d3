"""How many exports a worker streams at once: each holds a database connection and a snapshot
for as long as its client reads, so they have connections of their own, a few at a time, and
one account cannot take them all."""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tokenpulse.errors import TooManyRequests, Unavailable
from tokenpulse.replica import Source


class ExportObserver(Protocol):
    def exporting(self, running: int) -> None: ...

    def exported(self, events: int) -> None: ...


class ExportSlots:
    def __init__(
        self,
        engines: dict[Source, AsyncEngine],
        *,
        most: int,
        observer: ExportObserver,
        retry_after: int,
    ) -> None:
        self.engines = engines
        """Connections for exports alone, `most` to each database exports read (the primary,
        and a replica if there is one): dashboards never wait behind an export."""
        self.observer = observer
        self._most = most
        self._retry_after = retry_after
        self._running: Counter[str] = Counter()

    @contextmanager
    def slot(self, account: str) -> Iterator[None]:
        """Held while one export of `account` (a tenant, or a platform key) streams; 429 while
        that account already streams one here, 503 while the worker streams its most."""
        if self._running[account]:
            raise TooManyRequests(
                "an export of this tenant (or platform key) is already being streamed by this "
                "worker; try again when it ends",
                retry_after=self._retry_after,
            )
        if self._running.total() >= self._most:
            raise Unavailable(
                f"this worker is streaming as many exports as it may ({self._most}); try again "
                "later",
                retry_after=self._retry_after,
            )
        self._running[account] += 1
        self.observer.exporting(self._running.total())
        try:
            yield
        finally:
            self._running[account] -= 1
            self.observer.exporting(self._running.total())
