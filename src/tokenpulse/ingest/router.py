"""`POST /v1/events`: the HTTP face of ingest."""

import asyncio
import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tokenpulse.auth import Authentication, Caller, require
from tokenpulse.errors import PayloadTooLarge, TooManyRequests, Unavailable
from tokenpulse.ingest.answers import IngestAnswer, ingest_body
from tokenpulse.ingest.batcher import Batcher
from tokenpulse.ingest.body import Format, body_format, read_limited
from tokenpulse.ingest.dependencies import Budget, EventRate, Rules, WorkerBatcher
from tokenpulse.ingest.events import Checking
from tokenpulse.ingest.ingestion import OVER_SHARE, ingest
from tokenpulse.ingest.validation import Validated, validate_body
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.ratelimit import TokenBuckets
from tokenpulse.runtime import AppSettings, Timeouts, WallClock, WorkerMetrics
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

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
    authentication: Authentication,
    settings: AppSettings,
    clock: WallClock,
    timeouts: Timeouts,
    batcher: WorkerBatcher,
    budget: Budget,
    rules: Rules,
    event_rate: EventRate,
    metrics: WorkerMetrics,
) -> JSONResponse:
    body_kind, gzipped = body_format(
        request.headers.get("content-type"), request.headers.get("content-encoding")
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise PayloadTooLarge(
            f"the body is larger than the limit of {settings.max_body_bytes:,} bytes"
        )
    account = account_of(caller)
    _admit(batcher, event_rate, account, settings)
    with budget.holding(account) as reserve:
        body = await read_limited(
            request.stream(),
            limit=settings.max_body_bytes,
            gzipped=gzipped,
            timeouts=timeouts,
            reserve=reserve,
        )
        checking = Checking(rules, clock(), caller.tenant)
        validated = await _validated(body, body_kind, checking, settings.max_events_per_request)
        del body  # the validated events are what is kept from here on
        # A key revoked while the body was arriving stores nothing.
        await authentication.recheck(caller)
        _charge(event_rate, account, len(validated.events) + len(validated.rejections), settings)
        result = await ingest(
            validated,
            account=account,
            batcher=batcher,
            retry_after=settings.retry_after_seconds,
        )
    events = metrics.events
    events.labels("accepted").inc(result.accepted)
    events.labels("duplicate").inc(result.duplicates)
    events.labels("rejected").inc(len(result.rejections))
    return JSONResponse(result.as_json(), status_code=200 if result.stored_any else 422)


def account_of(caller: Caller) -> str:
    """Whose share of a worker a request uses: its key's tenant, or a platform key's own."""
    return f"tenant:{caller.tenant}" if caller.tenant is not None else f"key:{caller.key_id}"


def _admit(
    batcher: Batcher, event_rate: TokenBuckets | None, account: str, settings: Settings
) -> None:
    """Refuse, before its body is read, a request that could not be taken now."""
    retry_after = settings.retry_after_seconds
    if not batcher.has_room():
        raise Unavailable("ingest is overloaded; retry later", retry_after=retry_after)
    if not batcher.has_room_for(account):
        raise TooManyRequests(OVER_SHARE, retry_after=retry_after)
    if event_rate is not None and (wait := event_rate.wait(account)):
        raise _too_fast(settings, wait)


def _charge(event_rate: TokenBuckets | None, account: str, events: int, settings: Settings) -> None:
    """Spend the request's events from its account's rate: every event costs, stored or not."""
    if event_rate is not None and (wait := event_rate.take(account, events)):
        raise _too_fast(settings, wait)


def _too_fast(settings: Settings, wait: float) -> TooManyRequests:
    rate = settings.rate_limit_ingest_events
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
