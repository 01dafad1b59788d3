"""`POST /v1/events`: the HTTP face of ingest."""

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tokenpulse.arrival import BodyTimeouts
from tokenpulse.auth import Caller, recheck, require
from tokenpulse.errors import PayloadTooLarge, TooManyRequests, Unavailable
from tokenpulse.ingest.body import Format, body_format, read_limited
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.ingestion import OVER_SHARE, ingest
from tokenpulse.ingest.validation import Validated, validate_body
from tokenpulse.keys.scopes import Scope
from tokenpulse.openapi import AUTHENTICATED, IngestAnswer, answers, ingest_body
from tokenpulse.runtime import Runtime, get_runtime

router = APIRouter(tags=["ingest"])


@router.post(
    "/v1/events",
    responses={
        **answers(IngestAnswer, *AUTHENTICATED, 400, 408, 413, 415),
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
    account = account_of(caller)
    _admit(runtime, account)
    with runtime.body_budget.holding(account) as reserve:
        body = await read_limited(
            request.stream(),
            limit=settings.max_body_bytes,
            gzipped=gzipped,
            timeouts=BodyTimeouts.of(settings),
            reserve=reserve,
        )
        checking = Checking(runtime.event_rules, runtime.clock(), caller.tenant)
        validated = await _validated(body, body_kind, checking, settings.max_events_per_request)
        del body  # the validated events are what is kept from here on
        # A key revoked while the body was arriving stores nothing.
        await recheck(runtime, caller)
        _charge(runtime, account, len(validated.events) + len(validated.rejections))
        result = await ingest(
            validated,
            account=account,
            batcher=runtime.batcher,
            retry_after=settings.retry_after_seconds,
        )
    events = runtime.metrics.events
    events.labels("accepted").inc(result.accepted)
    events.labels("duplicate").inc(result.duplicates)
    events.labels("rejected").inc(len(result.rejections))
    return JSONResponse(result.as_json(), status_code=200 if result.stored_any else 422)


def account_of(caller: Caller) -> str:
    """Whose share of a worker a request uses: its key's tenant, or a platform key's own."""
    return f"tenant:{caller.tenant}" if caller.tenant is not None else f"key:{caller.key_id}"


def _admit(runtime: Runtime, account: str) -> None:
    """Refuse, before its body is read, a request that could not be taken now."""
    retry_after = runtime.settings.retry_after_seconds
    if not runtime.batcher.has_room():
        raise Unavailable("ingest is overloaded; retry later", retry_after=retry_after)
    if not runtime.batcher.has_room_for(account):
        raise TooManyRequests(OVER_SHARE, retry_after=retry_after)
    if runtime.event_rate is not None and (wait := runtime.event_rate.wait(account)):
        raise _too_fast(runtime, wait)


def _charge(runtime: Runtime, account: str, events: int) -> None:
    """Spend the request's events from its account's rate: every event costs, stored or not."""
    if runtime.event_rate is not None and (wait := runtime.event_rate.take(account, events)):
        raise _too_fast(runtime, wait)


def _too_fast(runtime: Runtime, wait: float) -> TooManyRequests:
    rate = runtime.settings.rate_limit_ingest_events
    return TooManyRequests(
        f"this tenant sends more than its limit of {rate:,g} events a second",
        retry_after=max(1, math.ceil(wait)),
    )


OFF_LOOP_BYTES = 64 * 1024
"""Bodies from this size on are validated on a thread, so that the worker keeps answering."""


async def _validated(
    body: bytes, body_kind: Format, checking: Checking, max_events: int
) -> Validated:
    if len(body) < OFF_LOOP_BYTES:
        return validate_body(body, body_kind, checking, max_events=max_events)
    return await asyncio.to_thread(validate_body, body, body_kind, checking, max_events=max_events)
