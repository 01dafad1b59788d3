"""`POST /v1/integrations/litellm`: the HTTP face of LiteLLM's generic API logger's payloads."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tokenpulse.auth import Caller, require
from tokenpulse.ingest.answers import IngestAnswer
from tokenpulse.ingest.body import body_format
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.intake import WorkerIntake
from tokenpulse.ingest.validation import Validated
from tokenpulse.litellm.answers import payload_body
from tokenpulse.litellm.body import payloads_of
from tokenpulse.litellm.payloads import Attribution, validate_payloads
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.scopes import Scope

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/integrations/litellm",
    operation_id="ingestLitellmPayloads",
    summary="Send LiteLLM's logged calls",
    description="What LiteLLM's `generic_api` callback sends, in any of its log formats: "
    "each payload that is usage becomes one event, stored exactly once per "
    "`(tenant, id)`. The answer is that of `/v1/events`: a 200 means every accepted or "
    "duplicate event is committed, a 422 that every payload that is usage was rejected, each "
    "with its reasons named in the payload's fields.",
    responses={
        **answers(IngestAnswer, *AUTHENTICATED, 400, 408, 413, 415),
        422: {"model": IngestAnswer, "description": "Every payload that is usage was rejected."},
    },
    openapi_extra=payload_body() | needs_key(Scope.INGEST),
)
async def post_litellm_payloads(
    request: Request,
    caller: Annotated[Caller, Depends(require(Scope.INGEST))],
    intake: WorkerIntake,
) -> JSONResponse:
    body_kind, gzipped = body_format(
        request.headers.get("content-type"), request.headers.get("content-encoding")
    )
    max_events = intake.settings.max_events_per_request
    attribution = Attribution.of(intake.settings)

    def decode(body: bytes, checking: Checking) -> Validated:
        return validate_payloads(payloads_of(body, body_kind, max_events), checking, attribution)

    result = await intake.take(request, caller, gzipped=gzipped, decode=decode)
    # A body of payloads that are no usage has nothing wrong with it either.
    refused = bool(result.rejections) and not result.stored_any
    return JSONResponse(result.as_json(), status_code=422 if refused else 200)
