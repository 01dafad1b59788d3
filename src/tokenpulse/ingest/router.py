"""`POST /v1/events`: the HTTP face of ingest."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tokenpulse.auth import Caller, require
from tokenpulse.errors import PayloadTooLarge, Unavailable
from tokenpulse.ingest.body import body_format, read_limited
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.ingestion import ingest
from tokenpulse.ingest.validation import validate_body
from tokenpulse.keys.scopes import Scope
from tokenpulse.openapi import AUTHENTICATED, IngestAnswer, answers, ingest_body
from tokenpulse.runtime import Runtime, get_runtime

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/events",
    responses={
        **answers(IngestAnswer, *AUTHENTICATED, 400, 413, 415),
        422: {"model": IngestAnswer, "description": "Every event was rejected."},
    },
    openapi_extra=ingest_body(),
)
async def post_events(
    request: Request,
    caller: Annotated[Caller, Depends(require(Scope.INGEST))],
    runtime: Annotated[Runtime, Depends(get_runtime)],
) -> JSONResponse:
    settings = runtime.settings
    body_kind, gzipped = body_format(
        request.headers.get("content-type"), request.headers.get("content-encoding")
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the body is larger than the limit of {settings.max_body_bytes:,} bytes"
        )
    if not runtime.batcher.has_room():
        raise Unavailable(
            "ingest is overloaded; retry later", retry_after=settings.retry_after_seconds
        )
    with runtime.body_budget.holding() as reserve:
        body = await read_limited(
            request.stream(), limit=settings.max_body_bytes, gzipped=gzipped, reserve=reserve
        )
        checking = Checking(runtime.event_rules, runtime.clock(), caller.tenant)
        validated = validate_body(
            body, body_kind, checking, max_events=settings.max_events_per_request
        )
        del body  # the validated events are what is kept from here on
        result = await ingest(
            validated, batcher=runtime.batcher, retry_after=settings.retry_after_seconds
        )
    events = runtime.metrics.events
    events.labels("accepted").inc(result.accepted)
    events.labels("duplicate").inc(result.duplicates)
    events.labels("rejected").inc(len(result.rejections))
    return JSONResponse(result.as_json(), status_code=200 if result.stored_any else 422)
