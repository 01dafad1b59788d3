"""Taking an ingest request from its first byte to its committed events, whatever the body's
format: `/v1/events`, `/v1/traces` and `/v1/integrations/litellm` differ only in how a body
becomes events, and share every limit, budget, rate and the one write path."""

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tokenpulse.arrival import BodyTimeouts
from tokenpulse.auth import Authentication, Caller, account_of
from tokenpulse.clock import Clock
from tokenpulse.errors import PayloadTooLarge, TooManyRequests, Unavailable
from tokenpulse.ingest.admission import BodyBudget
from tokenpulse.ingest.batcher import Batcher
from tokenpulse.ingest.body import read_limited
from tokenpulse.ingest.dependencies import Budget, EventRate, Rules, WorkerBatcher
from tokenpulse.ingest.events import Checking, EventRules
from tokenpulse.ingest.ingestion import OVER_SHARE, IngestResult, ingest
from tokenpulse.ingest.validation import Validated
from tokenpulse.metrics import Metrics
from tokenpulse.ratelimit import TokenBuckets
from tokenpulse.runtime import AppSettings, Timeouts, WallClock, WorkerMetrics
from tokenpulse.settings import Settings

Decoder = Callable[[bytes, Checking], Validated]
"""A body's bytes as its events, each valid or rejected with its reasons; raises `BadRequest`
for a body that is not of its format and `PayloadTooLarge` for one with too many events."""

OFF_LOOP_BYTES = 64 * 1024
"""Bodies from this size on are decoded on a thread, so that the worker keeps answering."""


@dataclass(frozen=True, slots=True)
class Intake:
    """What taking a request's events needs of its worker."""

    settings: Settings
    clock: Clock
    timeouts: BodyTimeouts
    batcher: Batcher
    budget: BodyBudget
    rules: EventRules
    event_rate: TokenBuckets | None
    metrics: Metrics
    authentication: Authentication

    async def take(
        self, request: Request, caller: Caller, *, gzipped: bool, decode: Decoder
    ) -> IngestResult:
        """Read the body within every limit, decode it and store its valid events.

        Returns once the stored events are committed. Raises `PayloadTooLarge`,
        `TooManyRequests` or `Unavailable` (the last two with `Retry-After`) when the request
        cannot be taken; then nothing of it was stored.
        """
        settings = self.settings
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_body_bytes:
            raise PayloadTooLarge(
                f"the body is larger than the limit of {settings.max_body_bytes:,} bytes"
            )
        account = account_of(caller)
        self._admit(account)
        with self.budget.holding(account) as reserve:
            body = await read_limited(
                request.stream(),
                limit=settings.max_body_bytes,
                gzipped=gzipped,
                timeouts=self.timeouts,
                reserve=reserve,
            )
            checking = Checking(self.rules, self.clock(), caller.tenant)
            if len(body) < OFF_LOOP_BYTES:
                validated = decode(body, checking)
            else:
                validated = await asyncio.to_thread(decode, body, checking)
            del body  # the validated events are what is kept from here on
            # A key revoked while the body was arriving stores nothing.
            await self.authentication.recheck(caller)
            self._charge(account, len(validated.events) + len(validated.rejections))
            result = await ingest(
                validated,
                account=account,
                batcher=self.batcher,
                retry_after=settings.retry_after_seconds,
            )
        events = self.metrics.events
        events.labels("accepted").inc(result.accepted)
        events.labels("duplicate").inc(result.duplicates)
        events.labels("rejected").inc(len(result.rejections))
        return result

    def _admit(self, account: str) -> None:
        """Refuse, before its body is read, a request that could not be taken now."""
        retry_after = self.settings.retry_after_seconds
        if not self.batcher.has_room():
            raise Unavailable("ingest is overloaded; retry later", retry_after=retry_after)
        if not self.batcher.has_room_for(account):
            raise TooManyRequests(OVER_SHARE, retry_after=retry_after)
        if self.event_rate is not None and (wait := self.event_rate.wait(account)):
            raise self._too_fast(wait)

    def _charge(self, account: str, events: int) -> None:
        """Spend the request's events from its account's rate: every event costs, stored or
        not."""
        if self.event_rate is not None and (wait := self.event_rate.take(account, events)):
            raise self._too_fast(wait)

    def _too_fast(self, wait: float) -> TooManyRequests:
        rate = self.settings.rate_limit_ingest_events
        return TooManyRequests(
            f"this tenant sends more than its limit of {rate:,g} events a second",
            retry_after=max(1, math.ceil(wait)),
        )


async def _intake(
    settings: AppSettings,
    clock: WallClock,
    timeouts: Timeouts,
    batcher: WorkerBatcher,
    budget: Budget,
    rules: Rules,
    event_rate: EventRate,
    metrics: WorkerMetrics,
    authentication: Authentication,
) -> Intake:
    return Intake(
        settings, clock, timeouts, batcher, budget, rules, event_rate, metrics, authentication
    )


WorkerIntake = Annotated[Intake, Depends(_intake)]
