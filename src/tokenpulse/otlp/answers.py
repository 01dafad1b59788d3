"""What `POST /v1/traces` answers, as OTLP/HTTP says and `/openapi.json` describes it: an
`ExportTraceServiceResponse` whose partial success counts the rejected usage spans and says why,
and a `google.rpc.Status` for every error, each in the request's encoding."""

from typing import Annotated, Any

from google.rpc.code_pb2 import Code
from google.rpc.error_details_pb2 import BadRequest as BadData
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from pydantic import Field

from tokenpulse.errors import Problem, ServiceError
from tokenpulse.ingest.answers import CONTENT_ENCODING
from tokenpulse.ingest.ingestion import IngestResult
from tokenpulse.openapi import Shape, error_responses

MESSAGE_MAX = 1_000
"""Longest `error_message`, in characters: the first rejected spans, whole, that fit."""


def export_answer(result: IngestResult) -> ExportTraceServiceResponse:
    """The answer to an export whose usage spans were all stored, duplicates or rejected: a
    partial success exactly when some were rejected, which an exporter must not send again."""
    answer = ExportTraceServiceResponse()
    if result.rejections:
        answer.partial_success.rejected_spans = len(result.rejections)
        answer.partial_success.error_message = _rejected(result)
    return answer


def _rejected(result: IngestResult) -> str:
    rejections = result.rejections
    usage = result.accepted + result.duplicates + len(rejections)
    message = f"{len(rejections):,} of {usage:,} usage spans rejected"
    for listed, rejection in enumerate(rejections):
        said = "; ".join(_named(problem) for problem in rejection.errors)
        part = f" | span {rejection.event_id}: {said}"
        unlisted = len(rejections) - listed
        rest = f" | and {unlisted - 1:,} more" if unlisted > 1 else ""
        if len(message) + len(part) + len(rest) > MESSAGE_MAX:
            if listed == 0:
                # One span with more to say than fits: as much of it as does.
                room = MESSAGE_MAX - len(message) - len(rest) - 1
                return f"{message}{part[:room]}…{rest}"
            return f"{message} | and {unlisted:,} more"
        message += part
    return message


def _named(problem: Problem) -> str:
    return problem.message if problem.field is None else f"{problem.field}: {problem.message}"


_CODES = {
    400: Code.INVALID_ARGUMENT,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    408: Code.DEADLINE_EXCEEDED,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.UNIMPLEMENTED,
    429: Code.RESOURCE_EXHAUSTED,
    501: Code.UNIMPLEMENTED,
    503: Code.UNAVAILABLE,
}
"""gRPC's code nearest each status: OTLP clients go by the status, and may log the code."""


def status_answer(error: ServiceError) -> Status:
    """The error as OTLP/HTTP answers one; bad data says what is bad in a `BadRequest`."""
    status = Status(code=_CODES.get(error.status, Code.INTERNAL), message=error.message)
    if error.status == 400:
        problems = error.problems or (Problem(None, error.message),)
        status.details.add().Pack(
            BadData(
                field_violations=[
                    BadData.FieldViolation(field=problem.field or "", description=problem.message)
                    for problem in problems
                ]
            )
        )
    return status


class PartialSuccess(Shape):
    rejected_spans: Annotated[
        str,
        Field(
            alias="rejectedSpans",
            pattern=r"^[0-9]+$",
            description="How many usage spans were rejected, as OTLP JSON writes a 64-bit integer.",
        ),
    ]
    error_message: Annotated[
        str,
        Field(
            alias="errorMessage",
            max_length=MESSAGE_MAX,
            description="Why: each rejected span's id (`<trace id>:<span id>`) and what is "
            "wrong with it, naming the attribute, for the first spans that fit.",
        ),
    ]


class TraceAnswer(Shape):
    """OTLP's `ExportTraceServiceResponse`, in JSON."""

    partial_success: Annotated[
        PartialSuccess | None,
        Field(
            alias="partialSuccess",
            description="Present only when usage spans were rejected: the others are stored.",
        ),
    ] = None


class FieldViolation(Shape):
    field: str = ""
    description: str


class StatusDetail(Shape):
    type: Annotated[str, Field(alias="@type")]
    field_violations: Annotated[
        list[FieldViolation], Field(alias="fieldViolations", default_factory=list)
    ]


class StatusAnswer(Shape):
    """A `google.rpc.Status`, in JSON: what went wrong, and for bad data a `BadRequest` naming
    what is bad."""

    code: int
    message: str
    details: Annotated[list[StatusDetail], Field(default_factory=list)]


_PROTOBUF = {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the same export again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body cannot be decoded: not retryable.", {}),
    401: (
        "No key, or an unknown or revoked one.",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}},
    ),
    403: ("The key's scope does not allow ingest.", {}),
    408: ("The body stalled or took too long to arrive; the connection is closed.", {}),
    413: ("The body is larger than the limit, or holds too many spans: not retryable.", {}),
    415: ("The Content-Type or Content-Encoding is not one that is accepted.", {}),
    429: ("The key's or its tenant's rate or share is exceeded: retryable.", _RETRY_AFTER),
    503: ("Overloaded, or the database is unavailable: retryable.", _RETRY_AFTER),
}


def trace_responses() -> dict[int | str, dict[str, Any]]:
    """`responses=` for `POST /v1/traces`: each in protobuf or JSON, as the request was."""
    documented: dict[int | str, dict[str, Any]] = {
        200: {
            "model": TraceAnswer,
            "description": "Every usage span is stored, was a duplicate, or is counted in "
            "`partialSuccess`; none is to be sent again.",
            "content": _PROTOBUF,
        }
    }
    for status, (description, headers) in _ERRORS.items():
        documented[status] = {"model": StatusAnswer, "description": description}
        documented[status]["content"] = _PROTOBUF
        if headers:
            documented[status]["headers"] = headers
    # Answered by the HTTP layer before any route, in the one error shape.
    return documented | error_responses()


def traces_body() -> dict[str, Any]:
    """`openapi_extra` for `POST /v1/traces`: an `ExportTraceServiceRequest`, maybe gzipped."""
    return {
        "parameters": [CONTENT_ENCODING],
        "requestBody": {
            "required": True,
            "content": {
                **_PROTOBUF,
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "OTLP JSON: lowerCamelCase names, trace and span ids in "
                        "hex, enums as integers, 64-bit integers as strings or numbers.",
                        "properties": {
                            "resourceSpans": {"type": "array", "items": {"type": "object"}}
                        },
                    }
                },
            },
        },
    }
