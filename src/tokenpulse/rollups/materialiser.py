"""The materialiser: one per database, elected by an advisory lock, folds pending deltas into the
rollups behind ingest."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.clock import Monotonic
from tokenpulse.database import is_unavailable
from tokenpulse.rollups.fold import FOLD_MAX_ROWS, Folded, fold
from tokenpulse.tables import rollup_pending

log = logging.getLogger(__name__)

LEADER_LOCK = 0x746F6B656E6D  # "tokenm": any constant every instance shares, not the migrations'
CAMPAIGN_SECONDS = 1.0
"""How often a worker that does not lead asks for the lock: a dead leader's successor folds
within about this long after the database notices the death."""
VACUUM_SECONDS = 2.0
"""How often the leader vacuums the pending table: every fold leaves its rows dead, and reads
scan them until a vacuum frees them; autovacuum wakes only once a minute by default."""
CLOSE_TIMEOUT_SECONDS = 5.0


class Observer(Protocol):
    """What the materialiser reports as it works (for metrics)."""

    def leading(self, leads: bool) -> None: ...

    def folded(self, folded: Folded, seconds: float) -> None: ...

    def fold_failed(self) -> None: ...


@dataclass(frozen=True)
class Pending:
    rows: int
    lag: float
    """Age in seconds of the oldest pending delta; 0 when there is none."""


async def pending(connection: AsyncConnection) -> Pending:
    """How much waits to be folded, now."""
    rows, lag = (
        await connection.execute(
            text(
                "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp()"
                f" - min(appended_at))::float8, 0) FROM {rollup_pending.name}"
            )
        )
    ).one()
    return Pending(rows, lag)


class Materialiser:
    """Campaigns for the database's fold lock and, while it holds it, folds every `interval`
    seconds, and sooner the fuller the last fold was."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        interval: float,
        observer: Observer,
        monotonic: Monotonic,
        max_rows: int = FOLD_MAX_ROWS,
        after_fold: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        """`after_fold`: work that only one worker of the database may do at a time, given the
        leader's connection after each fold (outside any transaction)."""
        self._engine = engine
        self._interval = interval
        self._observer = observer
        self._max_rows = max_rows
        self._monotonic = monotonic
        self._after_fold = after_fold
        self._leader: AsyncConnection | None = None
        """The connection that holds the lock, while this worker leads; the lock goes with it."""
        self._last_vacuum = monotonic()
        self._task: asyncio.Task[None] | None = None
        self._last_failure_log = -CAMPAIGN_SECONDS * 5

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tokenpulse-materialiser")

    async def close(self) -> None:
        """Stop; a leader folds what is pending once more and hands the lock on."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._leader is not None:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self._fold()
            except Exception as exc:
                self._log_failure(exc)
            await self._resign()

    async def _run(self) -> None:
        while True:
            wait = CAMPAIGN_SECONDS
            try:
                if self._leader is None:
                    await self._campaign()
                if self._leader is not None:
                    folded = await self._fold()
                    if self._after_fold is not None:
                        await self._after_fold(self._leader)
                    await self._vacuum_when_due()
                    wait = self._interval * max(0.0, 1 - folded.rows / self._max_rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._leader is not None:
                    self._observer.fold_failed()
                self._log_failure(exc)
                await self._resign()
            await asyncio.sleep(wait)

    async def _campaign(self) -> None:
        connection = await self._engine.connect()
        try:
            won = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}
            )
            await connection.commit()
        except BaseException:
            await connection.close()
            raise
        if not won:
            await connection.close()
            return
        self._leader = connection
        self._observer.leading(True)
        log.info("this worker now folds pending deltas into the rollups")

    async def _fold(self) -> Folded:
        assert self._leader is not None
        # A figure for metrics, of real time even where the service's clock is set by a test.
        started = time.perf_counter()
        async with self._leader.begin():
            folded = await fold(self._leader, max_rows=self._max_rows)
        self._observer.folded(folded, time.perf_counter() - started)
        return folded

    async def _vacuum_when_due(self) -> None:
        """Vacuum pending now and then; a failure is logged, and costs no leadership."""
        if self._monotonic() - self._last_vacuum < VACUUM_SECONDS:
            return
        self._last_vacuum = self._monotonic()
        try:
            # VACUUM runs outside any transaction, so on a connection of its own.
            async with self._engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.exec_driver_sql(f"VACUUM {rollup_pending.name}")
        except Exception as exc:
            log.warning("vacuuming the pending deltas failed (%s)", type(exc).__name__)

    async def _resign(self) -> None:
        """Give the lock up by closing its connection (unpooled: it really closes)."""
        leader, self._leader = self._leader, None
        if leader is None:
            return
        self._observer.leading(False)
        try:
            await leader.close()
        except Exception:
            # The connection is gone already, and with it the lock.
            await leader.invalidate()

    def _log_failure(self, exc: BaseException) -> None:
        if not is_unavailable(exc):
            log.error("folding pending deltas failed", exc_info=exc)
            return
        now = self._monotonic()
        if now - self._last_failure_log >= CAMPAIGN_SECONDS * 5:
            self._last_failure_log = now
            log.warning("the database is unavailable (%s); folds wait", type(exc).__name__)
