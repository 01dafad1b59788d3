"""Rendering every error, ours or the framework's, as the one JSON shape of `errors.error_body`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tokenpulse.database import is_database_error, is_unavailable
from tokenpulse.errors import BadRequest, InvalidParameters, ServiceError, Unavailable, error_body

log = logging.getLogger(__name__)


def database_outage(request: Request, exc: Exception) -> Unavailable | None:
    """What a database failure answers when the database is unavailable (None for any other
    failure); either is counted in the metrics."""
    # Set by the lifespan; absent only in an application that was never started.
    metrics = getattr(request.app.state, "metrics", None)
    settings = getattr(request.app.state, "settings", None)
    if metrics is not None and is_database_error(exc):
        metrics.failed(unavailable=is_unavailable(exc))
    if not is_unavailable(exc):
        return None
    retry_after = settings.retry_after_seconds if settings is not None else 1
    return Unavailable("the database is unavailable", retry_after=retry_after)


def install_error_handlers(app: FastAPI) -> None:
    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.problems),
            status_code=exc.status,
            headers=exc.headers,
        )

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return await service_error(request, InvalidParameters.from_validation(exc.errors(), skip=1))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def body_cut_short(request: Request, exc: Exception) -> JSONResponse:
        # Nobody reads this answer; what matters is that nothing of the request was kept, and
        # that a client going away is not logged as the service failing.
        return await service_error(
            request, BadRequest("the connection closed before the body ended")
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if (unavailable := database_outage(request, exc)) is not None:
            return await service_error(request, unavailable)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body(ServiceError.code, "the service failed to handle this request"),
            status_code=500,
        )

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, body_cut_short)
    # Database failures are answered (503 in an outage) by the same layer as the errors above,
    # which does not raise them again: an outage must not log a traceback for every request.
    for failure in (DBAPIError, PoolTimeout, OSError, TimeoutError):
        app.add_exception_handler(failure, unexpected)
    app.add_exception_handler(Exception, unexpected)
