"""The sender: claims due deliveries, posts them signed, and writes each attempt's outcome.

Every worker runs one. A claim moves the delivery's `next_attempt_at` past the longest an attempt
may take, in a transaction that skips deliveries other senders hold, so that each attempt is
made by one sender; a sender that dies mid-attempt leaves the delivery due again once that time
has passed. Delivery is therefore at least once, and every attempt carries the same
`webhook-id`.
"""

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokenpulse.clock import Clock, Monotonic
from tokenpulse.database import is_unavailable
from tokenpulse.tables import delivery, delivery_attempt, notification, webhook
from tokenpulse.webhooks.destinations import RefusedDestination, pinned, public_address
from tokenpulse.webhooks.retries import RetryPolicy
from tokenpulse.webhooks.signing import signed_headers
from tokenpulse.webhooks.store import cancel_pending

log = logging.getLogger(__name__)

IN_FLIGHT_MOST = 20
"""Attempts one sender makes at once."""
LEASE_MARGIN = timedelta(seconds=30)
"""Added to the attempt timeout: how much later than an attempt should have ended its delivery
is due again, when no outcome was written."""
ERROR_CHARACTERS = 300


@dataclass(frozen=True)
class Claimed:
    notification_id: str
    webhook_id: str
    attempts: int
    """With this one."""
    found_at: datetime
    url: str
    secret: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    attempted_at: datetime
    status: int | None
    error: str | None
    seconds: float

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class SendObserver(Protocol):
    """What the sender reports (for metrics)."""

    def attempted(self, delivered: bool) -> None: ...


def body_bytes(body: dict[str, Any]) -> bytes:
    """A notification's body as it is signed and sent."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Sender:
    """Keeps up to IN_FLIGHT_MOST attempts going: every `interval` seconds it claims as many due
    deliveries as it has room for, and each attempt writes its own outcome as soon as it ends,
    so that an endpoint slow to answer holds up only its own deliveries."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Clock,
        monotonic: Monotonic,
        interval: float,
        timeout: float,
        retries: RetryPolicy,
        private_addresses: bool,
        observer: SendObserver | None = None,
    ) -> None:
        """`private_addresses`: whether a webhook may be sent to loopback, private and
        link-local addresses, which are otherwise refused as its host resolves at each
        attempt."""
        self._engine = engine
        self._clock = clock
        self._monotonic = monotonic
        self._interval = interval
        self._timeout = timeout
        self._retries = retries
        self._private_addresses = private_addresses
        self._observer = observer
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._last_failure_log = float("-inf")

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._task = asyncio.create_task(self._run(), name="tokenpulse-webhook-sender")

    async def close(self) -> None:
        """Stop; an attempt under way is abandoned, and made again once its claim runs out."""
        tasks = [*self._in_flight, *([self._task] if self._task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            try:
                await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._log_failure(exc)
            await asyncio.sleep(self._interval)

    async def send_due(self) -> int:
        """Claim due deliveries, as many as there is room for, and start their attempts: how
        many were started."""
        room = IN_FLIGHT_MOST - len(self._in_flight)
        if room <= 0:
            return 0
        now = self._clock()
        async with self._engine.begin() as connection:
            claimed = await _claim(
                connection, now, now + timedelta(seconds=self._timeout) + LEASE_MARGIN, room
            )
        for each in claimed:
            task = asyncio.create_task(self._deliver(each), name="tokenpulse-webhook-attempt")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(claimed)

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await self._attempt(claimed)
        try:
            async with self._engine.begin() as connection:
                await _write(connection, outcome, self._retries)
        except Exception as exc:
            # Unwritten, the attempt is made again once its claim runs out.
            self._log_failure(exc)
            return
        if self._observer is not None:
            self._observer.attempted(outcome.delivered)

    async def _attempt(self, claimed: Claimed) -> Outcome:
        assert self._client is not None
        attempted_at = self._clock()
        body = body_bytes(claimed.body)
        headers = signed_headers(
            claimed.secret, claimed.notification_id, int(attempted_at.timestamp()), body
        )
        # A figure of real time, even where the service's clock is set by a test.
        started = time.perf_counter()

        def failed(error: str) -> Outcome:
            return Outcome(
                claimed, attempted_at, None, error[:ERROR_CHARACTERS], time.perf_counter() - started
            )

        try:
            # httpx times each read on its own: an answer that trickles in would outlast the
            # claim, and another sender would attempt the delivery meanwhile.
            async with asyncio.timeout(self._timeout):
                url = httpx.URL(claimed.url)
                extra: dict[str, str] = {}
                extensions: dict[str, str] = {}
                if not self._private_addresses:
                    url, extra, extensions = pinned(claimed.url, await public_address(claimed.url))
                request = self._client.stream(
                    "POST", url, content=body, headers={**headers, **extra}, extensions=extensions
                )
                async with request as answer:
                    # The status is the answer: the body, of any size, is never read.
                    status = answer.status_code
        except TimeoutError:
            return failed(f"TimeoutError: no answer within {self._timeout:g} s")
        except RefusedDestination as refused:
            return failed(f"refused: {refused}")
        except Exception as exc:
            # Whatever ends this attempt is its outcome alone, never that of the deliveries
            # attempted beside it: a URL that httpx cannot send to raises no HTTPError.
            if not isinstance(exc, httpx.HTTPError):
                log.warning("a webhook delivery attempt could not be made", exc_info=exc)
            return failed(f"{type(exc).__name__}: {exc}")
        return Outcome(claimed, attempted_at, status, None, time.perf_counter() - started)

    def _log_failure(self, exc: BaseException) -> None:
        if not is_unavailable(exc):
            log.error("sending webhook deliveries failed", exc_info=exc)
            return
        now = self._monotonic()
        if now - self._last_failure_log >= 5:
            self._last_failure_log = now
            log.warning("the database is unavailable (%s); deliveries wait", type(exc).__name__)


async def _claim(
    connection: AsyncConnection, now: datetime, until: datetime, most: int
) -> list[Claimed]:
    """Up to `most` deliveries due at `now`, each claimed until `until`."""
    # A delivery made in the same moment as its webhook's deletion escaped the cancelling.
    await cancel_pending(
        connection,
        delivery.c.next_attempt_at <= now,
        delivery.c.webhook_id == webhook.c.id,
        webhook.c.deleted_at.is_not(None),
    )
    due = (
        select(delivery.c.notification_id, delivery.c.webhook_id)
        .where(delivery.c.state == "pending", delivery.c.next_attempt_at <= now)
        .order_by(delivery.c.next_attempt_at)
        .limit(most)
        .with_for_update(skip_locked=True)
    )
    keys = (
        await connection.execute(
            update(delivery)
            .where(tuple_(delivery.c.notification_id, delivery.c.webhook_id).in_(due))
            .values(next_attempt_at=until, attempts=delivery.c.attempts + 1)
            .returning(delivery.c.notification_id, delivery.c.webhook_id, delivery.c.attempts)
        )
    ).all()
    if not keys:
        return []
    attempts = {(row.notification_id, row.webhook_id): row.attempts for row in keys}
    rows = await connection.execute(
        select(
            notification.c.id,
            notification.c.found_at,
            notification.c.body,
            webhook.c.id.label("webhook_id"),
            webhook.c.url,
            webhook.c.secret,
        )
        .select_from(notification.join(delivery, delivery.c.notification_id == notification.c.id))
        .join(webhook, webhook.c.id == delivery.c.webhook_id)
        .where(tuple_(delivery.c.notification_id, delivery.c.webhook_id).in_(list(attempts)))
    )
    return [
        Claimed(
            row.id,
            row.webhook_id,
            attempts[(row.id, row.webhook_id)],
            row.found_at,
            row.url,
            row.secret,
            row.body,
        )
        for row in rows
    ]


async def _write(connection: AsyncConnection, outcome: Outcome, retries: RetryPolicy) -> None:
    claimed = outcome.claimed
    await connection.execute(
        delivery_attempt.insert().values(
            notification_id=claimed.notification_id,
            webhook_id=claimed.webhook_id,
            attempted_at=outcome.attempted_at,
            status=outcome.status,
            error=outcome.error,
            seconds=outcome.seconds,
        )
    )
    if outcome.delivered:
        values: dict[str, Any] = {
            "state": "delivered",
            "delivered_at": outcome.attempted_at,
            "next_attempt_at": None,
        }
    elif outcome.attempted_at >= claimed.found_at + retries.retry_for:
        values = {"state": "failed", "next_attempt_at": None}
    else:
        values = {"next_attempt_at": outcome.attempted_at + retries.wait(claimed.attempts)}
    # A delivery cancelled meanwhile (its webhook deleted) stays so.
    await connection.execute(
        update(delivery)
        .where(
            delivery.c.notification_id == claimed.notification_id,
            delivery.c.webhook_id == claimed.webhook_id,
            delivery.c.state == "pending",
        )
        .values(values)
    )
