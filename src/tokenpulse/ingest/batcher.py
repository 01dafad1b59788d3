"""Group commit: the events of concurrent requests stored in one transaction, acked after it."""

import asyncio
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tokenpulse.clock import Monotonic
from tokenpulse.database import is_unavailable, refusal_to_commit
from tokenpulse.ingest.events import Event
from tokenpulse.ingest.writer import EventKey

# A flush takes what has gathered when it holds `max_batch_events` or its oldest request has
# waited `max_wait`; every request of a flush is answered only after its transaction commits.
# Requests wait in one queue per account (a tenant, or a platform key), and a flush takes one
# request of each account in turn: an account that sends a flood queues behind itself, and
# another's request waits at most one turn of every account, not behind the whole flood.

log = logging.getLogger(__name__)

OUTAGE_LOG_INTERVAL_SECONDS = 5.0

Store = Callable[[Sequence[Event]], Awaitable[set[EventKey]]]


class Overloaded(Exception):
    """The queue is full: the events were not taken, and may be sent again later."""


class AccountOverloaded(Overloaded):
    """The account's share of the queue is full: its events were not taken."""


class ShuttingDown(Exception):
    """The batcher no longer takes events."""


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer; nothing of the request was acked."""


@dataclass(eq=False)
class _Request:
    events: Sequence[Event]
    account: str
    arrived: float
    outcome: asyncio.Future[list[bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class FlushStats:
    events: int
    requests: int
    seconds: float


class Observer(Protocol):
    """What the batcher reports as it works (for metrics)."""

    def flushed(self, stats: FlushStats) -> None: ...

    def failed(self, *, unavailable: bool) -> None: ...

    def holding(self, events: int) -> None: ...


class _Unobserved:
    def flushed(self, stats: FlushStats) -> None:
        pass

    def failed(self, *, unavailable: bool) -> None:
        pass

    def holding(self, events: int) -> None:
        pass


class Batcher:
    def __init__(
        self,
        store: Store,
        *,
        max_batch_events: int,
        max_wait: float,
        max_concurrent_flushes: int,
        max_queued_events: int,
        max_account_events: int,
        answer_timeout: float,
        clock: Monotonic,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_batch_events = max_batch_events
        self._max_wait = max_wait
        self._max_queued_events = max_queued_events
        self._max_account_events = max_account_events
        self._answer_timeout = answer_timeout
        self._observer = observer or _Unobserved()
        self._slots = asyncio.Semaphore(max_concurrent_flushes)
        self._waiting: dict[str, deque[_Request]] = {}
        """Each account's waiting requests, oldest first; the accounts in the order of turns."""
        self._waiting_events = 0
        self._held_by_account: defaultdict[str, int] = defaultdict(int)
        self._arrived = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self._held_events = 0
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._last_outage_log = -math.inf
        self._refused: tuple[float, str] | None = None
        """When the database last refused a flush's commit, and why; None once one has
        committed since."""

    def has_room(self) -> bool:
        """Whether another request would be taken now (checked before reading its body)."""
        return not self._closing and self._held_events < self._max_queued_events

    def has_room_for(self, account: str) -> bool:
        """Whether the account may have another request taken now, by its share of the queue."""
        return self._held_by_account.get(account, 0) < self._max_account_events

    def refused_commit(self, within: float) -> str | None:
        """Why the database refused the last flush ("the disk is full"), if it did so less than
        `within` seconds ago; None if a flush committed since."""
        if self._refused is None or self._clock() - self._refused[0] >= within:
            return None
        return self._refused[1]

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="tokenpulse-batcher")

    async def submit(self, events: Sequence[Event], account: str) -> list[bool]:
        """Store `events` of `account`; for each, True if it is new and False if it was stored
        already.

        Returns only after the transaction that holds them has committed. Raises
        `StoreUnavailable` when that has not happened within the answer timeout.
        """
        if self._closing:
            raise ShuttingDown
        held = self._held_by_account.get(account, 0)
        if held and held + len(events) > self._max_account_events:
            raise AccountOverloaded
        if self._held_events and self._held_events + len(events) > self._max_queued_events:
            raise Overloaded
        request = _Request(events, account, self._clock())
        self._waiting.setdefault(account, deque()).append(request)
        self._waiting_events += len(events)
        self._hold(request, len(events))
        self._arrived.set()
        # Shielded: a caller that stops waiting (a timeout, a disconnect) must not cancel the
        # outcome that the flush will still set for the events it is storing.
        try:
            async with asyncio.timeout(self._answer_timeout):
                return await asyncio.shield(request.outcome)
        except TimeoutError:
            self._withdraw(request)
            raise StoreUnavailable from None

    def _hold(self, request: _Request, events: int) -> None:
        """Count `events` more (or fewer) of `request`'s account as held."""
        self._held_events += events
        self._held_by_account[request.account] += events
        if not self._held_by_account[request.account]:
            del self._held_by_account[request.account]
        self._observer.holding(self._held_events)

    def _withdraw(self, request: _Request) -> None:
        """Drop a request its caller gave up on, unless a flush is already storing it."""
        queue = self._waiting.get(request.account)
        if queue is not None and request in queue:
            queue.remove(request)
            if not queue:
                del self._waiting[request.account]
            self._waiting_events -= len(request.events)
            self._hold(request, -len(request.events))
            request.outcome.cancel()

    async def close(self) -> None:
        """Take no more events, flush every waiting one, and return when all are answered."""
        self._closing = True
        self._arrived.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._flushes:
            await asyncio.wait(self._flushes)

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._gather_more()
            await self._slots.acquire()
            if not self._waiting:  # every waiting request was withdrawn meanwhile
                self._slots.release()
                continue
            batch = self._take_batch()
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flush_done)

    async def _gather_more(self) -> None:
        """Let more requests join until the oldest has waited long enough or the batch is full."""
        while not self._closing and self._waiting and self._waiting_events < self._max_batch_events:
            oldest = min((queue[0] for queue in self._waiting.values()), key=lambda r: r.arrived)
            remaining = oldest.arrived + self._max_wait - self._clock()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)
            # Slept by the event loop's clock, the oldest request is due, whatever the injected
            # clock says; only if it was withdrawn meanwhile is a younger one waited for.
            if oldest in self._waiting.get(oldest.account, ()):
                return

    def _take_batch(self) -> list[_Request]:
        """Whole requests up to max_batch_events (a larger request goes alone): the oldest
        request of each account in turn, each account served going to the back.

        The batch ends at the first request that does not fit, which then leads the next one:
        skipped, a large request could wait behind small ones for ever.
        """
        batch: list[_Request] = []
        size = 0
        while self._waiting:
            account, queue = next(iter(self._waiting.items()))
            if batch and size + len(queue[0].events) > self._max_batch_events:
                break
            request = queue.popleft()
            batch.append(request)
            size += len(request.events)
            del self._waiting[account]
            if queue:
                self._waiting[account] = queue
        self._waiting_events -= size
        return batch

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushes.discard(task)
        self._slots.release()

    async def _flush(self, batch: list[_Request]) -> None:
        try:
            await self._store_batch(batch)
        finally:
            for request in batch:
                self._hold(request, -len(request.events))

    async def _store_batch(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        events = [event for request in batch for event in request.events]
        # Sorted by key so that every writer inserts, and so locks, keys in the same order. The
        # sort is stable: of two events with one key, the earlier submitted one is stored.
        events.sort(key=lambda event: (event.tenant, event.event_id))
        try:
            new_keys = await self._store(events)
        except Exception as exc:
            unavailable = is_unavailable(exc)
            self._observer.failed(unavailable=unavailable)
            if refusal := refusal_to_commit(exc):
                self._refused = (self._clock(), refusal)
            if len(batch) > 1 and not unavailable:
                # Not an outage: find the request at fault, so that the others are still stored.
                log.warning("a batch of %d requests failed; storing them one by one", len(batch))
                for request in batch:
                    await self._store_batch([request])
                return
            self._log_failure(exc, unavailable, len(events))
            failure = StoreUnavailable() if unavailable else exc
            for request in batch:
                if not request.outcome.done():
                    request.outcome.set_exception(failure)
            return
        self._refused = None
        for request in batch:
            outcomes = []
            for event in request.events:
                key = (event.tenant, event.event_id)
                outcomes.append(key in new_keys)
                new_keys.discard(key)
            if not request.outcome.done():
                request.outcome.set_result(outcomes)
        self._observer.flushed(FlushStats(len(events), len(batch), time.perf_counter() - started))

    def _log_failure(self, exc: Exception, unavailable: bool, events: int) -> None:
        if not unavailable:
            log.error("storing %d events failed", events, exc_info=exc)
            return
        # An outage fails every flush; one line every few seconds says so without a flood.
        now = self._clock()
        if now - self._last_outage_log >= OUTAGE_LOG_INTERVAL_SECONDS:
            self._last_outage_log = now
            log.warning("the database is unavailable (%s); ingest answers 503", type(exc).__name__)
