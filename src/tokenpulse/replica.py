"""Dashboards' reads on a streaming replica: which database a read goes to, and how far behind the
replica is.

How far behind is measured by WAL positions, not by the time of the last transaction it replayed
(which stops moving while the primary is idle): twice a second the worker notes the primary's
WAL position, then asks the replica how far it has replayed. The replica holds everything
committed on the primary by the latest moment whose position it has replayed, so a read there
misses at most what was acknowledged since: its staleness. While that is within the allowed lag
reads go to the replica; beyond it, while the replica cannot be asked, or when a request asks,
they go to the primary.
"""

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Literal, Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.clock import Monotonic
from tokenpulse.database import is_unavailable, snapshot

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.5
"""How often the primary's WAL position and the replica's replay are compared."""

Source = Literal["primary", "replica"]

_WRITTEN = text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8")
# NULL on a server that is not replaying: a primary, holding everything.
_REPLAYED = text(
    "SELECT CASE WHEN pg_is_in_recovery()"
    " THEN pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8 END"
)


class NotReplaying(Exception):
    """The read database is not a standby: what it holds need not follow the primary."""


class ReplicaObserver(Protocol):
    def replica_lag(self, seconds: float | None) -> None: ...


class Reads:
    """Where one request reads: the replica if it is close enough behind and answers, else the
    primary; `source` says which, once `snapshot` has connected."""

    def __init__(
        self,
        routing: "ReadRouting",
        *,
        primary: bool,
        told: Callable[[Source], None] | None = None,
    ) -> None:
        self._routing = routing
        self._primary = primary
        self._told = told
        self.source: Source = "primary"

    @asynccontextmanager
    async def snapshot(
        self, engines: Mapping[Source, AsyncEngine] | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """`database.snapshot` of the database chosen, on `engines`' pool of it if given; a
        replica that cannot be reached is passed over for the primary, and for the reads after
        this one until it is measured again."""
        self.source = self._routing.choose(primary=self._primary)
        pools = engines or self._routing.engines
        async with AsyncExitStack() as stack:
            try:
                connection = await stack.enter_async_context(snapshot(pools[self.source]))
            except Exception as exc:
                if self.source != "replica" or not is_unavailable(exc):
                    raise
                log.warning("the read replica is unavailable; reading from the database: %s", exc)
                self._routing.lost_replica()
                self.source = "primary"
                connection = await stack.enter_async_context(snapshot(pools[self.source]))
            if self._told is not None:
                self._told(self.source)
            yield connection


class ReadRouting:
    """Where each worker's dashboard reads go: the replica, while it is at most `max_lag` seconds
    behind the primary; else, and without a replica, the primary."""

    def __init__(
        self,
        primary: AsyncEngine,
        replica: AsyncEngine | None = None,
        *,
        max_lag: float = 0.0,
        monotonic: Monotonic,
        observer: ReplicaObserver | None = None,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._max_lag = max_lag
        self._monotonic = monotonic
        self._observer = observer
        self._written: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.staleness: float | None = None
        """Seconds of acknowledged writes the replica may not hold yet; None: not known."""
        self._measured_at = 0.0

    @property
    def engines(self) -> dict[Source, AsyncEngine]:
        engines: dict[Source, AsyncEngine] = {"primary": self._primary}
        if self._replica is not None:
            engines["replica"] = self._replica
        return engines

    def reads(
        self, *, primary: bool = False, told: Callable[[Source], None] | None = None
    ) -> Reads:
        """Where a request reads; `primary`: the primary, whatever the replica's lag. `told`
        hears which database it reads from, once it has connected."""
        return Reads(self, primary=primary, told=told)

    def choose(self, *, primary: bool = False) -> Source:
        if self._replica is None or primary or self.staleness is None:
            return "primary"
        # A figure only grows older: one that has not been measured again lately counts the
        # time since, and a replica whose measuring hangs is passed over within the lag.
        if self.staleness + (self._monotonic() - self._measured_at) > self._max_lag:
            return "primary"
        return "replica"

    def lost_replica(self) -> None:
        """The replica failed a read: unknown until it is measured again."""
        self.staleness = None

    def start(self) -> None:
        if self._replica is not None:
            self._task = asyncio.create_task(self._run(), name="tokenpulse-replica-lag")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failing = False
        while True:
            try:
                staleness = await self._measure()
                # Measured as of the moment the primary's position was taken.
                self.staleness, self._measured_at = staleness, self._written[-1][0]
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.staleness = None
                if not failing:
                    log.warning("cannot tell how far behind the read replica is: %s", exc)
                failing = True
            if self._observer is not None:
                self._observer.replica_lag(self.staleness)
            await asyncio.sleep(SAMPLE_SECONDS)

    async def _measure(self) -> float:
        assert self._replica is not None
        now = self._monotonic()
        async with self._primary.connect() as connection:
            self._written.append((now, int(await connection.scalar(_WRITTEN) or 0)))
        async with self._replica.connect() as connection:
            replayed = await connection.scalar(_REPLAYED)
        if replayed is None:
            # A promoted replica, or a primary named by mistake, takes none of the primary's
            # writes any more: it is never read from.
            self._written.clear()
            raise NotReplaying("the read replica is not replaying a primary's WAL")
        # The latest moment all of whose writes the replica has replayed.
        caught_up = None
        for at, position in self._written:
            if position <= replayed:
                caught_up = at
        # Samples older than the last one replayed tell nothing more; nor do those far older
        # than any lag allowed.
        while len(self._written) > 1 and (
            self._written[1][1] <= replayed or now - self._written[0][0] > self._max_lag + 60
        ):
            self._written.popleft()
        if caught_up is None:
            # Behind every position noted: at least as far behind as the oldest, and too far.
            return max(now - self._written[0][0], self._max_lag + SAMPLE_SECONDS)
        return now - caught_up
