"""Operations: `/healthz` says the process runs, `/readyz` that it can serve, `/metrics` how."""

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tokenpulse.auth import authenticate
from tokenpulse.database import (
    is_database_error,
    is_unavailable,
)
from tokenpulse.errors import Forbidden
from tokenpulse.keys.scopes import Scope
from tokenpulse.migrations import current_revision
from tokenpulse.openapi import HealthAnswer, ReadinessAnswer, error_responses
from tokenpulse.readiness import READINESS_TIMEOUT_SECONDS
from tokenpulse.rollups.materialiser import pending
from tokenpulse.runtime import Runtime, get_runtime

router = APIRouter(tags=["health"])

# A flush the database refused makes a worker unready for this long, unless one commits sooner:
# long enough to be taken out of traffic, short enough to come back once the disk has room.
INGEST_REFUSAL_SECONDS = 10.0


@router.get("/healthz", responses={200: {"model": HealthAnswer}, **error_responses()})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"model": ReadinessAnswer},
        503: {"model": ReadinessAnswer, "description": "A check failed, or shutting down."},
        **error_responses(),
    },
)
async def readyz(runtime: Annotated[Runtime, Depends(get_runtime)]) -> JSONResponse:
    checks = await readiness_checks(runtime)
    ready = all(check == "ok" for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


@contextmanager
def unready_on_stop_signal(runtime: Runtime) -> Iterator[None]:
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
    drain = runtime.settings.shutdown_drain.total_seconds()

    def note(signum: int, frame: FrameType | None) -> None:
        handler = chained[signal.Signals(signum)]
        if runtime.shutting_down or not drain:
            runtime.shutting_down = True
            handler(signum, frame)
            return
        runtime.shutting_down = True
        # Signal handlers run on the main thread, between the event loop's steps.
        asyncio.get_running_loop().call_later(drain, handler, signum, frame)

    for sig in chained:
        signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in chained.items():
            signal.signal(sig, handler)


async def readiness_checks(runtime: Runtime) -> dict[str, str]:
    """Each check's verdict: "ok", or what is wrong, never naming the database or its address.

    The database is "ok" when it answers and a commit succeeds now: one that is reachable but
    cannot commit (a full disk, a read-only database) fails every ingest request.
    """
    checks = {"shutdown": "shutting down" if runtime.shutting_down else "ok"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), runtime.engine.connect() as conn:
            revision = await current_revision(conn)
    except Exception as exc:
        checks["database"] = "unreachable" if is_unavailable(exc) else "query failed"
        checks["schema"] = "unknown"
        return checks
    if revision == runtime.head_revision:
        # The probe row exists only at the newest migration.
        checks["database"] = await runtime.commit_probe.verdict(runtime.engine)
        checks["schema"] = "ok"
        # The probe's one row may still fit where ingest's new pages no longer do.
        refused = runtime.batcher.refused_commit(INGEST_REFUSAL_SECONDS)
        if checks["database"] == "ok" and refused:
            checks["database"] = f"cannot commit: {refused}"
    else:
        checks["database"] = "ok"
        checks["schema"] = (
            f"migration {revision or 'none'} applied, {runtime.head_revision} is the newest"
        )
    return checks


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **error_responses(401, 403, 503),
    },
)
async def metrics(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    if not runtime.settings.metrics_public:
        caller = await authenticate(request, runtime)
        if caller.tenant is not None or caller.scope is Scope.INGEST:
            raise Forbidden("metrics need a platform key with the read or admin scope")
    await _observe_pending(runtime)
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def _observe_pending(runtime: Runtime) -> None:
    """Read how much waits to be folded; an unreachable database leaves the figures as they
    were, so that /metrics still answers with the rest."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), runtime.engine.connect() as conn:
            state = await pending(conn)
    except Exception as exc:
        if not is_database_error(exc):
            raise
        return
    runtime.metrics.pending(state.rows, state.lag)
