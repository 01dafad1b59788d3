"""Operations: `/healthz` says the process runs, `/readyz` that it can serve, `/metrics` how."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tokenpulse.auth import authenticate
from tokenpulse.database import is_unavailable
from tokenpulse.errors import Forbidden
from tokenpulse.keys.scopes import Scope
from tokenpulse.migrations import current_revision
from tokenpulse.runtime import Runtime, get_runtime

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: Annotated[Runtime, Depends(get_runtime)]) -> JSONResponse:
    checks = await readiness_checks(runtime)
    ready = all(check == "ok" for check in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def readiness_checks(runtime: Runtime) -> dict[str, str]:
    """Each check's verdict: "ok", or what is wrong, never naming the database or its address."""
    checks = {"shutdown": "shutting down" if runtime.shutting_down else "ok"}
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), runtime.engine.connect() as conn:
            revision = await current_revision(conn)
    except Exception as exc:
        checks["database"] = "unreachable" if is_unavailable(exc) else "query failed"
        checks["schema"] = "unknown"
        return checks
    checks["database"] = "ok"
    if revision == runtime.head_revision:
        checks["schema"] = "ok"
    else:
        checks["schema"] = (
            f"migration {revision or 'none'} applied, {runtime.head_revision} is the newest"
        )
    return checks


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Response:
    if not runtime.settings.metrics_public:
        caller = await authenticate(request, runtime)
        if caller.tenant is not None or caller.scope is Scope.INGEST:
            raise Forbidden("metrics need a platform key with the read or admin scope")
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
