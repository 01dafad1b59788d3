"""`POST /v1/events`: the HTTP face of ingest."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tokenpulse.auth import Caller, require
from tokenpulse.ingest.answers import IngestAnswer, ingest_body
from tokenpulse.ingest.body import body_format
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.intake import WorkerIntake
from tokenpulse.ingest.validation import Validated, validate_body
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.scopes import Scope

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/events",
    operation_id="ingestEvents",
    summary="Send usage events",
    description='One event, a batch `{"events": [...]}` or NDJSON (an event a line), maybe '
    "gzipped. Each event is validated on its own and stored exactly once per "
    "`(tenant, event_id)`: the answer counts those accepted, the duplicates and those rejected, "
    "and says why each was rejected. A 200 means every accepted or duplicate event is committed "
    "and counted by every aggregate; 422, that every event was rejected. After a 429 or 503, "
    "send the same events again once `Retry-After` has passed: a duplicate is never counted "
    "twice.",
    responses={
        **answers(IngestAnswer, *AUTHENTICATED, 400, 408, 413, 415),
        422: {"model": IngestAnswer, "description": "Every event was rejected."},
    },
    openapi_extra=ingest_body() | needs_key(Scope.INGEST),
)
async def post_events(
    request: Request,
    caller: Annotated[Caller, Depends(require(Scope.INGEST))],
    intake: WorkerIntake,
) -> JSONResponse:
    body_kind, gzipped = body_format(
        request.headers.get("content-type"), request.headers.get("content-encoding")
    )
    max_events = intake.settings.max_events_per_request

    def decode(body: bytes, checking: Checking) -> Validated:
        return validate_body(body, body_kind, checking, max_events=max_events)

    result = await intake.take(request, caller, gzipped=gzipped, decode=decode)
    return JSONResponse(result.as_json(), status_code=200 if result.stored_any else 422)
