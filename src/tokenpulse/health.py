"""Operations: `/healthz` says the process runs, `/readyz` that it can serve, `/metrics` how."""

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.auth import Authentication
from tokenpulse.database import (
    is_database_error,
    is_unavailable,
)
from tokenpulse.errors import Forbidden
from tokenpulse.metrics import Metrics
from tokenpulse.migrations import current_revision
from tokenpulse.openapi import HealthAnswer, ReadinessAnswer, error_responses, needs_key
from tokenpulse.readiness import READINESS_TIMEOUT_SECONDS, CommitProbe
from tokenpulse.runtime import AppSettings, RequestEngine, Shared, WorkerMetrics
from tokenpulse.scopes import Scope

router = APIRouter(tags=["health"])

# A flush the database refused makes a worker unready for this long, unless one commits sooner:
# long enough to be taken out of traffic, short enough to come back once the disk has room.
INGEST_REFUSAL_SECONDS = 10.0


class CommitRefusals(Protocol):
    """Why the database last refused to commit ingest's events (`ingest.batcher.Batcher`)."""

    def refused_commit(self, within: float) -> str | None: ...


@dataclass
class Readiness:
    """What `/readyz` checks, and whether the process is stopping."""

    engine: AsyncEngine
    commit_probe: CommitProbe
    head_revision: str | None
    ingest: CommitRefusals
    shutting_down: bool = False


READINESS = Shared[Readiness]("readiness")


class Backlog(Protocol):
    """How much waits to be folded into the rollups (`rollups.materialiser.Pending`)."""

    @property
    def rows(self) -> int: ...

    @property
    def lag(self) -> float: ...


ReadBacklog = Callable[[AsyncConnection], Awaitable[Backlog]]


READ_BACKLOG = Shared[ReadBacklog]("read_backlog")


@router.get(
    "/healthz",
    operation_id="getHealth",
    summary="Liveness",
    description='`{"status": "ok"}` while the process runs; never touches the database. '
    "Needs no key.",
    responses={200: {"model": HealthAnswer}, **error_responses()},
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    summary="Readiness",
    description="200 when the database answers, a commit succeeds and the schema is at the newest "
    "migration; 503 naming each failed check, and while shutting down. Needs no key.",
    responses={
        200: {"model": ReadinessAnswer},
        503: {"model": ReadinessAnswer, "description": "A check failed, or shutting down."},
        **error_responses(),
    },
)
async def readyz(readiness: Annotated[Readiness, Depends(READINESS.read)]) -> JSONResponse:
    checks = await readiness_checks(readiness)
    ready = all(check == "ok" for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@contextmanager
def unready_on_stop_signal(readiness: Readiness, drain: float) -> Iterator[None]:
    """Make `/readyz` answer 503 the moment the process is told to stop.

    uvicorn handles SIGTERM and SIGINT: it stops accepting connections at once, and tells the
    application only once every connection has closed. This handler turns readiness off first,
    keeps serving for `shutdown_drain` so that load balancers see it and send no more, and then
    passes the signal on to uvicorn's.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    chained = {sig: handler for sig, handler in previous.items() if callable(handler)}

    def note(signum: int, frame: FrameType | None) -> None:
        handler = chained[signal.Signals(signum)]
        if readiness.shutting_down or not drain:
            readiness.shutting_down = True
            handler(signum, frame)
            return
        readiness.shutting_down = True
        # Signal handlers run on the main thread, between the event loop's steps.
        asyncio.get_running_loop().call_later(drain, handler, signum, frame)

    for sig in chained:
        signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in chained.items():
            signal.signal(sig, handler)


async def readiness_checks(readiness: Readiness) -> dict[str, str]:
    """Each check's verdict: "ok", or what is wrong, never naming the database or its address.

    The database is "ok" when it answers and a commit succeeds now: one that is reachable but
    cannot commit (a full disk, a read-only database) fails every ingest request.
    """
    checks = {"shutdown": "shutting down" if readiness.shutting_down else "ok"}
    engine = readiness.engine
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), engine.connect() as conn:
            revision = await current_revision(conn)
    except Exception as exc:
        checks["database"] = "unreachable" if is_unavailable(exc) else "query failed"
        checks["schema"] = "unknown"
        return checks
    if revision == readiness.head_revision:
        # The probe row exists only at the newest migration.
        checks["database"] = await readiness.commit_probe.verdict(engine)
        checks["schema"] = "ok"
        # The probe's one row may still fit where ingest's new pages no longer do.
        refused = readiness.ingest.refused_commit(INGEST_REFUSAL_SECONDS)
        if checks["database"] == "ok" and refused:
            checks["database"] = f"cannot commit: {refused}"
    else:
        checks["database"] = "ok"
        checks["schema"] = (
            f"migration {revision or 'none'} applied, {readiness.head_revision} is the newest"
        )
    return checks


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics",
    description="The service's own figures, in Prometheus' text format. Open to all unless "
    "`TOKENPULSE_METRICS_PUBLIC=false`, which asks for a platform key (bound to no tenant) with "
    "the `read` or `admin` scope.",
    response_class=Response,
    openapi_extra=needs_key(Scope.READ, optional=True),
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **error_responses(401, 403, 503),
    },
)
async def metrics(
    request: Request,
    settings: AppSettings,
    authentication: Authentication,
    engine: RequestEngine,
    figures: WorkerMetrics,
    read_backlog: Annotated[ReadBacklog, Depends(READ_BACKLOG.read)],
) -> Response:
    if not settings.metrics_public:
        caller = await authentication.authenticate(request)
        if caller.tenant is not None or caller.scope is Scope.INGEST:
            raise Forbidden("metrics need a platform key with the read or admin scope")
    await _observe_backlog(engine, read_backlog, figures)
    return Response(figures.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _observe_backlog(engine: AsyncEngine, read: ReadBacklog, figures: Metrics) -> None:
    """Read how much waits to be folded; an unreachable database leaves the figures as they
    were, so that /metrics still answers with the rest."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), engine.connect() as conn:
            backlog = await read(conn)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        return
    figures.pending(backlog.rows, backlog.lag)
