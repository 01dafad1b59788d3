"""Service errors, each with its HTTP status and code, and the one JSON shape they answer with:
`{"error": {"code", "message", "errors": [{"field", "message"}]}}`, `errors` only if any."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenpulse.text import echo
from tokenpulse.validation_messages import house_message


@dataclass(frozen=True)
class Problem:
    field: str | None
    message: str


class ServiceError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        problems: Sequence[Problem] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = tuple(problems)
        self.headers = headers or {}


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class RequestTimeout(ServiceError):
    """The request did not arrive in time; the connection is closed after the answer."""

    status = 408
    code = "request_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class InvalidParameters(ServiceError):
    status = 422
    code = "invalid_parameters"

    @classmethod
    def of(cls, field: str, message: str) -> "InvalidParameters":
        return cls.listing([Problem(field, message)])

    @classmethod
    def from_validation(
        cls, errors: Sequence[Mapping[str, Any]], *, skip: int = 0
    ) -> "InvalidParameters":
        """From pydantic's errors, in the words events are refused with; `skip` drops leading
        parts of each location ("query")."""
        return cls.listing(
            [
                Problem(
                    echo(".".join(str(part) for part in error["loc"][skip:])) or None,
                    house_message(error["type"], error.get("input"), error.get("ctx") or {}),
                )
                for error in errors
            ]
        )

    @classmethod
    def listing(cls, problems: Sequence[Problem]) -> "InvalidParameters":
        listed = capped(problems)
        return cls("; ".join(_named(p) for p in listed), problems=listed)


MAX_LISTED_PROBLEMS = 20


def capped(problems: Sequence[Problem]) -> list[Problem]:
    """The first MAX_LISTED_PROBLEMS of `problems`, then a count of the rest."""
    if len(problems) <= MAX_LISTED_PROBLEMS:
        return list(problems)
    # Thousands of short names fit in a request head or a small body: the answer must not grow
    # far past what asked for it.
    unlisted = len(problems) - MAX_LISTED_PROBLEMS
    return [*problems[:MAX_LISTED_PROBLEMS], Problem(None, f"and {unlisted:,} more errors")]


def _named(problem: Problem) -> str:
    return problem.message if problem.field is None else f"{problem.field}: {problem.message}"


class TooManyRequests(ServiceError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class Unavailable(ServiceError):
    """The service cannot take the request now; the same request may be sent again later."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


def error_body(code: str, message: str, problems: Sequence[Problem] = ()) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if problems:
        error["errors"] = [{"field": p.field, "message": p.message} for p in problems]
    return {"error": error}
