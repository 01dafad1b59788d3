"""Whether a commit succeeds now, for readiness: one row written and committed, one probe at
a time, its verdict reused for a moment however often it is asked."""

import asyncio

from sqlalchemy import exc as sa_exc
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tokenpulse.clock import Monotonic
from tokenpulse.database import causes, refusal_to_commit, sqlstate_of
from tokenpulse.tables import readiness_probe

READINESS_TIMEOUT_SECONDS = 2.0
# /readyz needs no key: however often it is asked, a worker commits the probe row at most once
# in this long, and answers with that commit's outcome in between.
COMMIT_PROBE_REUSE_SECONDS = 1.0


class CommitProbe:
    """Whether a commit succeeds now: the readiness row written and committed, one probe at a
    time, its verdict reused for `COMMIT_PROBE_REUSE_SECONDS`."""

    def __init__(self, monotonic: Monotonic) -> None:
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._verdict = "ok"
        self._at: float | None = None

    async def verdict(self, engine: AsyncEngine) -> str:
        """The verdict: "ok", or why a commit fails now."""
        if self._fresh():
            return self._verdict
        async with self._lock:
            if not self._fresh():
                self._verdict = await _probe_commit(engine)
                self._at = self._monotonic()
        return self._verdict

    def _fresh(self) -> bool:
        return self._at is not None and self._monotonic() - self._at < COMMIT_PROBE_REUSE_SECONDS


_PROBE_WRITE = (
    insert(readiness_probe)
    .values(id=1, written_at=func.now())
    .on_conflict_do_update(index_elements=["id"], set_={"written_at": func.now()})
)


async def _probe_commit(engine: AsyncEngine) -> str:
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), engine.begin() as connection:
            await connection.execute(_PROBE_WRITE)
    except Exception as exc:
        if _connection_lost(exc):
            return "unreachable"
        return f"cannot commit: {_commit_refusal(exc)}"
    return "ok"


def _connection_lost(exc: BaseException) -> bool:
    for cause in causes(exc):
        if isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated:
            return True
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            return True
        sqlstate = sqlstate_of(cause)
        if sqlstate and sqlstate.startswith(("08", "57P")):
            return True
    return False


def _commit_refusal(exc: BaseException) -> str:
    if refusal := refusal_to_commit(exc):
        return refusal
    for cause in causes(exc):
        if sqlstate := sqlstate_of(cause):
            return f"SQLSTATE {sqlstate}"
        if isinstance(cause, TimeoutError):
            return f"no answer within {READINESS_TIMEOUT_SECONDS:g} s"
    return "the write failed"
