"""What `POST /v1/events` reads and answers, as `/openapi.json` describes it: the handler reads
its body itself (for gzip and NDJSON), so FastAPI cannot infer it."""

from typing import Annotated, Any

from pydantic import Field

from tokenpulse.ingest.events import EventBatch, UsageEvent
from tokenpulse.ingest.ingestion import MAX_LISTED_REJECTIONS
from tokenpulse.openapi import Count, EventProblem, Shape, reference
from tokenpulse.settings import Settings


class EventRejection(Shape):
    index: Annotated[int, Field(ge=0)]
    event_id: str | None
    errors: list[EventProblem]


class IngestAnswer(Shape):
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


CONTENT_ENCODING: dict[str, Any] = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "description": "gzip: every limit applies to the decompressed bytes.",
    "schema": {"type": "string", "enum": ["gzip", "identity"]},
}
"""The header parameter of every ingest route, which all take gzip."""


def ingest_body() -> dict[str, Any]:
    """`openapi_extra` for `POST /v1/events`: one event, a batch, or NDJSON, maybe gzipped."""
    # Described at its default: a deployment may change it.
    max_events = Settings.model_fields["max_events_per_request"].default
    return {
        "parameters": [CONTENT_ENCODING],
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
                        "maxItems": max_events,
                        "description": "One event object per line; blank lines are ignored.",
                    }
                },
            },
        },
    }
