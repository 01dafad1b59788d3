"""What `/openapi.json` says beyond what FastAPI infers: the bodies read and answers built by
hand, the one error shape, and the bearer keys operations need.

Ingest, keys and launches read their bodies themselves (for gzip and NDJSON, and for errors
that name each field), and the answers are built as plain dicts, so FastAPI cannot infer their
shapes: each domain describes its own with the `Shape`s here, and its routes refer to them with
`answers`, `json_body` and `needs_key`.
"""

from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

_COMPONENT = "#/components/schemas/{model}"
Count = Annotated[int, Field(ge=0)]


class Shape(BaseModel):
    """A wire object as documented: no field beyond those named."""

    model_config = ConfigDict(extra="forbid")


class EventProblem(Shape):
    field: str | None
    message: str


class ErrorDetail(Shape):
    code: str
    message: str
    errors: Annotated[
        list[EventProblem], Field(description="Each parameter or field at fault, if any.")
    ] = []


class ErrorAnswer(Shape):
    error: ErrorDetail


class HealthAnswer(Shape):
    status: str


class ReadinessAnswer(Shape):
    status: str
    checks: dict[str, str]


def reference(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _COMPONENT.format(model=model.__name__)}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a JSON body that the endpoint reads itself; `model` must be among
    the ones `with_body_schemas` adds."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": reference(model)}},
        }
    }


def with_body_schemas(
    document: dict[str, Any], models: Sequence[type[BaseModel]]
) -> dict[str, Any]:
    """`document` with the components that `json_body` and `reference` refer to."""
    _, schemas = models_json_schema(
        [(model, "validation") for model in models], ref_template=_COMPONENT
    )
    document.setdefault("components", {}).setdefault("schemas", {}).update(schemas["$defs"])
    return document


BEARER = "bearer"
"""The name of the security scheme every key-taking operation refers to."""
_BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key, `tp_…`, sent as `Authorization: Bearer <key>`. Its scope is "
    "`ingest` (send events), `read` (aggregates, launches, milestones) or `admin` "
    "(everything the others may, and keys); a key bound to a tenant reads and writes that "
    "tenant only.",
}
_REQUIRED_SCOPE = "x-required-scope"


def needs_key(scope: str, *, optional: bool = False) -> dict[str, Any]:
    """`openapi_extra` for an operation that takes a bearer key whose scope covers `scope`; an
    `optional` one also answers without a key, as a deployment may choose."""
    # OpenAPI 3.1 lets a non-OAuth requirement list roles: the scope goes there for tools, and
    # in the extension for people, as Swagger UI shows extensions but not a bearer's roles.
    required = {BEARER: [scope]}
    return {"security": [{}, required] if optional else [required], _REQUIRED_SCOPE: scope}


def with_bearer_auth(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the scheme `needs_key` refers to, and each operation that always needs a
    key saying which scope in its description."""
    document.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = dict(
        _BEARER_SCHEME
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            scope = operation.get(_REQUIRED_SCOPE)
            if scope is None or {} in operation["security"]:
                continue
            needed = f"Needs a key with the `{scope}` scope."
            operation["description"] = "\n\n".join(
                part for part in (operation.get("description"), needed) if part
            )
    return document


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same request again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body is not valid JSON or NDJSON, or not an event or a batch.", {}),
    401: (
        "No key, or an unknown or revoked one.",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
    ),
    403: ("The key's scope or tenant does not allow this.", {}),
    404: ("There is no such resource.", {}),
    408: ("The body stalled or took too long to arrive; the connection is closed.", {}),
    409: ("What was asked conflicts with what is stored; the message says what to do.", {}),
    413: ("The body is larger than the limit, or holds too many events.", {}),
    415: ("The Content-Type or Content-Encoding is not one that is accepted.", {}),
    422: ("A parameter or field is invalid; `errors` names each.", {}),
    429: (
        "The key's rate limit, its tenant's events a second or its tenant's share of a worker "
        "is exceeded.",
        _RETRY_AFTER,
    ),
    431: ("The request line and headers are larger than 16 KiB.", {}),
    503: ("Overloaded, shutting down, or the database is unavailable.", _RETRY_AFTER),
}
AUTHENTICATED = (401, 403, 429, 503)
"""What any endpoint that needs a key may answer besides its own errors."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` documenting `statuses`, each with the one error shape, and 431 (any request
    may get it)."""
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 431}):
        description, headers = _ERRORS[status]
        documented[status] = {"model": ErrorAnswer, "description": description}
        if headers:
            documented[status]["headers"] = headers
    return documented


def answers(
    model: type[BaseModel], *errors: int, status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """`responses=` for an endpoint that answers `model` on success and `errors` otherwise."""
    return {status: {"model": model}, **error_responses(*errors)}
