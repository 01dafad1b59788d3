"""Rendering every error, ours or the framework's, as the one JSON shape of `errors.error_body`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenpulse.database import is_database_error, is_unavailable
from tokenpulse.errors import InvalidParameters, ServiceError, Unavailable, error_body

log = logging.getLogger(__name__)


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

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None and is_database_error(exc):
            runtime.metrics.failed(unavailable=is_unavailable(exc))
        if is_unavailable(exc):
            retry_after = runtime.settings.retry_after_seconds if runtime is not None else 1
            return await service_error(
                request, Unavailable("the database is unavailable", retry_after=retry_after)
            )
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            error_body(ServiceError.code, "the service failed to handle this request"),
            status_code=500,
        )

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
