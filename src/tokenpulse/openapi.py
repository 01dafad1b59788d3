"""What `/openapi.json` says about the bodies tokenpulse reads and writes by hand.

Ingest, keys and launches read their bodies themselves (for gzip and NDJSON, and for errors
that name each field), and the answers are built as plain dicts, so FastAPI cannot infer their
shapes. The event models are the ones that validate events; the answers' models here describe
what the handlers build.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from tokenpulse.ingest.events import EventBatch, UsageEvent
from tokenpulse.ingest.ingestion import MAX_LISTED_REJECTIONS
from tokenpulse.keys.scopes import Scope
from tokenpulse.settings import Settings

_COMPONENT = "#/components/schemas/{model}"
# The limits a deployment may change are described at their defaults.
_DEFAULT = {name: field.default for name, field in Settings.model_fields.items()}
Count = Annotated[int, Field(ge=0)]


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


# requests


# answers


class Measures(_Shape):
    requests: Count
    input_tokens: Count
    cached_input_tokens: Count
    output_tokens: Count
    reasoning_tokens: Count
    total_tokens: Count


class GroupMeasures(Measures):
    """The six measures of one group; only the group keys asked for are present."""

    tenant: str | None = None
    project: str | None = None
    model: str | None = None
    api_key_id: str | None = None


class TotalsAnswer(_Shape):
    start: datetime
    end: datetime
    results: list[GroupMeasures]


class UsageBucket(_Shape):
    start: datetime
    end: datetime
    results: list[GroupMeasures]


class UsageAnswer(_Shape):
    bucket: str
    start: datetime
    end: datetime
    data: list[UsageBucket]


class EventProblem(_Shape):
    field: str | None
    message: str


class EventRejection(_Shape):
    index: Annotated[int, Field(ge=0)]
    event_id: str | None
    errors: list[EventProblem]


class IngestAnswer(_Shape):
    """What became of each event: accepted, a duplicate, or rejected (and why)."""

    accepted: Count
    duplicates: Count
    rejected: Count
    errors: Annotated[
        list[EventRejection],
        Field(
            description=f"The first {MAX_LISTED_REJECTIONS} rejected events, in order, each "
            "with its reasons."
        ),
    ]
    errors_omitted: Annotated[
        int | None,
        Field(
            ge=1,
            description="How many rejected events are not listed; absent when all are.",
        ),
    ] = None


class ErrorDetail(_Shape):
    code: str
    message: str
    errors: Annotated[
        list[EventProblem], Field(description="Each parameter or field at fault, if any.")
    ] = []


class ErrorAnswer(_Shape):
    error: ErrorDetail


class KeyAnswer(_Shape):
    id: str
    name: str
    scope: Scope
    tenant: str | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKeyAnswer(KeyAnswer):
    key: Annotated[str, Field(description="The secret, shown this once.")]


class KeysAnswer(_Shape):
    keys: list[KeyAnswer]


class LaunchAnswer(_Shape):
    model: str
    launched_at: datetime


class LaunchesAnswer(_Shape):
    launches: list[LaunchAnswer]


class PeakMinute(_Shape):
    start: datetime
    total_tokens: Count


class LaunchMilestone(_Shape):
    threshold: int
    crossed_at: datetime | None
    seconds_after_launch: float | None
    event_id: str | None


class LaunchSummaryAnswer(LaunchAnswer):
    since_launch: Measures
    first_24h: Measures
    peak_minute: PeakMinute | None
    milestones: list[LaunchMilestone]


class MilestoneAnswer(_Shape):
    metric: str
    threshold: int
    since: datetime
    reached: bool
    crossed_at: datetime | None
    event_id: str | None
    seconds_after_since: float | None
    current: int


class HealthAnswer(_Shape):
    status: str


class ReadinessAnswer(_Shape):
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


def ingest_body() -> dict[str, Any]:
    """`openapi_extra` for `POST /v1/events`: one event, a batch, or NDJSON, maybe gzipped."""
    return {
        "parameters": [
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": False,
                "description": "gzip: every limit applies to the decompressed bytes.",
                "schema": {"type": "string", "enum": ["gzip", "identity"]},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [reference(UsageEvent), reference(EventBatch)]}
                },
                "application/x-ndjson": {
                    "schema": {
                        "type": "array",
                        "items": reference(UsageEvent),
                        "minItems": 1,
                        "maxItems": _DEFAULT["max_events_per_request"],
                        "description": "One event object per line; blank lines are ignored.",
                    }
                },
            },
        },
    }
