"""What `GET /v1/events/export` answers, as documented: lines of events, and maybe a cursor."""

from typing import Annotated, Any

from pydantic import Field

from tokenpulse.openapi import Shape, error_responses, reference

MEDIA_TYPE = "application/x-ndjson"


class ExportedEvent(Shape):
    """A stored event as `POST /v1/events` takes it, every field present, defaults filled in."""

    event_id: str
    occurred_at: Annotated[str, Field(description="RFC 3339 in UTC, to the microsecond.")]
    tenant: str
    project: str
    model: str
    api_key_id: str | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    attributes: dict[str, str] | None


class ExportCursor(Shape):
    """The last line of an answer that stopped at `limit`: pass it as `cursor` to go on."""

    next_cursor: str


def export_answers(*errors: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of the export: its lines, which the app adds to the components, and
    `errors`."""
    lines = {
        "type": "array",
        "items": {"anyOf": [reference(ExportedEvent), reference(ExportCursor)]},
        "description": "One JSON object per line: an event, in the export's order; after the "
        "last event of an answer that stopped at `limit`, a line with `next_cursor`.",
    }
    documented: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "The events, as NDJSON; gzip if the request's Accept-Encoding allows.",
            "content": {MEDIA_TYPE: {"schema": lines}},
        }
    }
    # Errors are JSON, not the NDJSON of the route's own answers.
    for status, answer in error_responses(*errors).items():
        error = {name: value for name, value in answer.items() if name != "model"}
        error["content"] = {"application/json": {"schema": reference(answer["model"])}}
        documented[status] = error
    return documented
