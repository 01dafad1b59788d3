"""`AsyncClient`: records events in an event loop and sends them from tasks of its own."""

import asyncio
import atexit
import logging
import random
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType

import httpx

from tokenpulse.client.backlog import Backlog, Batch
from tokenpulse.client.delivery import PATH, Answer, Stopped, delivery, run, run_async
from tokenpulse.client.errors import BufferFull, ClientClosed
from tokenpulse.client.events import encode_event
from tokenpulse.client.options import Options, WhenFull
from tokenpulse.client.reports import (
    Callbacks,
    Counts,
    OnRejected,
    OnUndelivered,
    Outcome,
    Undelivered,
)
from tokenpulse.client.retries import Retries

log = logging.getLogger("tokenpulse.client")


class AsyncClient:
    """Sends the events recorded in one event loop to `POST /v1/events`, in gzipped batches of
    `batch_size` events or of what `max_wait` seconds gathered, from `concurrency` tasks of its
    own; see the package's documentation for what becomes of each event.

    It belongs to the loop it is first used in. Callbacks run in that loop: keep them short.
    Left unclosed when the interpreter exits, it sends what it still holds from the exiting
    thread, for up to `exit_timeout` seconds, through httpx's own transport.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        batch_size: int = 1000,
        max_wait: float = 1.0,
        max_buffered_events: int = 100_000,
        when_full: WhenFull = "block",
        block_timeout: float = 10.0,
        retries: Retries | None = None,
        timeout: float = 30.0,
        exit_timeout: float = 10.0,
        concurrency: int = 2,
        on_rejected: OnRejected | None = None,
        on_undelivered: OnUndelivered | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._options = Options(
            url=url,
            key=key,
            batch_size=batch_size,
            max_wait=max_wait,
            max_buffered_events=max_buffered_events,
            when_full=when_full,
            block_timeout=block_timeout,
            retries=retries or Retries(),
            timeout=timeout,
            exit_timeout=exit_timeout,
            concurrency=concurrency,
        )
        self._callbacks = Callbacks(on_rejected, on_undelivered)
        self._http = httpx.AsyncClient(
            base_url=self._options.base_url,
            headers=self._options.headers(),
            timeout=timeout,
            transport=transport,
        )
        self._backlog = Backlog(
            capacity=max_buffered_events, batch_size=batch_size, max_wait=max_wait
        )
        lock = asyncio.Lock()
        self._work = asyncio.Condition(lock)
        """Senders wait on it for a batch to be due."""
        self._room = asyncio.Condition(lock)
        """`record` waits on it for room in a full buffer."""
        self._answered = asyncio.Condition(lock)
        """`flush` and `close` wait on it for answers."""
        self._closed = False
        self._stopping = False
        self._jitter = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._senders: list[asyncio.Task[None]] = []
        atexit.register(self._close_at_exit)

    async def record(
        self,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        tenant: str | None = None,
        project: str | None = None,
        api_key_id: str | None = None,
        cached_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        reasoning_tokens: int = 0,
        attributes: Mapping[str, str] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Hold one event for sending and return its id (a new UUIDv7 unless given), at once
        unless the buffer is full.

        `occurred_at` defaults to now. With the buffer full, waits up to `block_timeout` for
        room (`when_full="block"`) or not at all (`"raise"`), then raises BufferFull: the event
        is then not recorded.
        """
        event_id, json = encode_event(
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tenant=tenant,
            project=project,
            api_key_id=api_key_id,
            cached_input_tokens=cached_input_tokens,
            cache_write_input_tokens=cache_write_input_tokens,
            reasoning_tokens=reasoning_tokens,
            attributes=attributes,
            event_id=event_id,
            occurred_at=occurred_at,
        )
        self._check_open()
        self._start()
        async with self._room:
            if not self._backlog.has_room():
                await self._wait_for_room()
            wake = self._backlog.add(event_id, json, time.monotonic())
            if wake:
                self._work.notify()
        if wake:
            # A caller that records in a loop without awaiting anything else would otherwise
            # hold the senders back until it is done.
            await asyncio.sleep(0)
        return event_id

    async def flush(self) -> Counts:
        """Send every event recorded so far and wait until the server has answered for each
        (or each was given up) and the callbacks were told; the counts then. To wait no longer
        than some time, wrap it in `asyncio.timeout`: the events are still sent."""
        target = self._backlog.flush()
        async with self._answered:
            self._work.notify_all()
            await self._answered.wait_for(lambda: self._backlog.settled_through() >= target)
            return self._backlog.counts()

    async def close(self, give_up_after: float | None = None) -> Counts:
        """Record no more, send everything recorded and wait for the answers, then stop; the
        counts then. After `give_up_after` seconds, the events still unanswered are given up
        (`on_undelivered`). Closing again only returns the counts."""
        if self._stopping:
            return self._backlog.counts()
        self._closed = True
        self._backlog.closing = True
        answered = True
        try:
            async with asyncio.timeout(give_up_after), self._answered:
                self._work.notify_all()
                self._room.notify_all()
                await self._answered.wait_for(
                    lambda: self._backlog.settled_through() >= self._backlog.recorded
                )
        except TimeoutError:
            answered = False
        given_up = None
        if not answered:
            given_up = self._backlog.abandon(
                f"not answered for within the {give_up_after:g} s close() allowed"
            )
            for sender in self._senders:
                sender.cancel()
        async with self._work:
            self._stopping = True
            self._work.notify_all()
        if given_up is not None:
            self._callbacks.undelivered(given_up)
        await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()
        atexit.unregister(self._close_at_exit)
        return self._backlog.counts()

    @property
    def counts(self) -> Counts:
        """What became of the events recorded so far."""
        return self._backlog.counts()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed and records no more events")

    def _start(self) -> None:
        """Start the senders in the running loop, the first time."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._senders = [
                loop.create_task(self._send_batches(), name="tokenpulse-client")
                for _ in range(self._options.concurrency)
            ]
        elif loop is not self._loop:
            raise RuntimeError("an AsyncClient belongs to the event loop it was first used in")

    async def _wait_for_room(self) -> None:
        full = f"the client holds {self._backlog.capacity:,} unanswered events, as many as it may"
        if self._options.when_full == "raise":
            raise BufferFull(full)
        timeout = self._options.block_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._room.wait_for(lambda: self._closed or self._backlog.has_room())
        except TimeoutError:
            raise BufferFull(f"{full}, and none was answered for within {timeout:g} s") from None
        self._check_open()

    async def _send_batches(self) -> None:
        while (batch := await self._next_batch()) is not None:
            outcome = await self._deliver(batch)
            async with self._answered:
                if self._backlog.settle(batch, outcome):
                    # Told before a flush waiting for it can resume.
                    self._callbacks.report(outcome)
                self._room.notify_all()
                self._answered.notify_all()

    async def _next_batch(self) -> Batch | None:
        async with self._work:
            while not self._stopping:
                due = self._backlog.due_in(time.monotonic())
                if due == 0:
                    batch = self._backlog.take()
                    if self._backlog.due_in(time.monotonic()) == 0:
                        self._work.notify()
                    return batch
                try:
                    async with asyncio.timeout(due):
                        await self._work.wait()
                except TimeoutError:
                    pass
            return None

    async def _deliver(self, batch: Batch) -> Outcome:
        try:
            return await run_async(delivery(batch, self._options.retries, self._jitter), self._post)
        except Exception as exc:
            log.exception("delivering %d events failed", len(batch.events))
            events = tuple(event.event() for event in batch.events)
            return Outcome(undelivered=[Undelivered(events, f"the client failed: {exc!r}", None)])

    async def _post(self, body: bytes) -> Answer:
        try:
            return await self._http.post(PATH, content=body)
        except httpx.RequestError as exc:
            return exc

    def _close_at_exit(self) -> None:
        loop, timeout = self._loop, self._options.exit_timeout
        if not self._backlog.counts().pending:
            return
        if loop is not None and loop.is_running():
            # The loop goes on in another thread: the client closes in it, as it would itself.
            asyncio.run_coroutine_threadsafe(self.close(timeout), loop).result()
            return
        # The loop has ended, and the senders with it (asyncio.run cancels every task it
        # leaves): what they held is sent again from here, with the same event ids.
        self._backlog.reclaim()
        self._backlog.closing = True
        self._closed = True
        deadline = time.monotonic() + timeout
        options = self._options
        with httpx.Client(
            base_url=options.base_url, headers=options.headers(), timeout=options.timeout
        ) as http:

            def post(body: bytes) -> Answer:
                left = max(deadline - time.monotonic(), 0.001)
                try:
                    return http.post(PATH, content=body, timeout=min(options.timeout, left))
                except httpx.RequestError as exc:
                    return exc

            def pause(seconds: float) -> None:
                if time.monotonic() + seconds > deadline:
                    raise Stopped
                time.sleep(seconds)

            while self._backlog.due_in(time.monotonic()) == 0 and time.monotonic() < deadline:
                batch = self._backlog.take()
                try:
                    outcome = run(delivery(batch, options.retries, self._jitter), post, pause)
                except Stopped:
                    break
                self._backlog.settle(batch, outcome)
                self._callbacks.report(outcome)
        given_up = self._backlog.abandon("the process exited before the server answered for them")
        if given_up is not None:
            self._callbacks.undelivered(given_up)
