"""`Client`: records events from any thread and sends them from threads of its own."""

import atexit
import logging
import random
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType

import httpx

from tokenpulse.client.backlog import Backlog, Batch
from tokenpulse.client.delivery import PATH, Answer, Stopped, delivery, run
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


class Client:
    """Sends the events recorded from any thread to `POST /v1/events`, in gzipped batches of
    `batch_size` events or of what `max_wait` seconds gathered, from `concurrency` threads of
    its own; see the package's documentation for what becomes of each event.

    Callbacks run on those threads: keep them short, and do not flush or close the client
    from one.
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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(
            base_url=self._options.base_url,
            headers=self._options.headers(),
            timeout=timeout,
            transport=transport,
        )
        self._backlog = Backlog(
            capacity=max_buffered_events, batch_size=batch_size, max_wait=max_wait
        )
        lock = threading.Lock()
        self._work = threading.Condition(lock)
        """Senders wait on it for a batch to be due."""
        self._room = threading.Condition(lock)
        """`record` waits on it for room in a full buffer."""
        self._answered = threading.Condition(lock)
        """`flush` and `close` wait on it for answers."""
        self._closed = False
        self._stopping = threading.Event()
        self._jitter = random.Random()
        self._senders = [
            threading.Thread(target=self._send_batches, name="tokenpulse-client", daemon=True)
            for _ in range(concurrency)
        ]
        for sender in self._senders:
            sender.start()
        atexit.register(self._close_at_exit)

    def record(
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
        """Hold one event for sending and return its id at once (a new UUIDv7 unless given).

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
        with self._room:
            self._check_open()
            if not self._backlog.has_room():
                self._wait_for_room()
            if self._backlog.add(event_id, json, time.monotonic()):
                self._work.notify()
        return event_id

    def flush(self, timeout: float | None = None) -> Counts:
        """Send every event recorded so far and wait until the server has answered for each
        (or each was given up) and the callbacks were told; the counts then. TimeoutError
        after `timeout` seconds: the events are still being sent."""
        self._check_not_a_sender("flush")
        with self._answered:
            target = self._backlog.flush()
            self._work.notify_all()
            if not self._answered.wait_for(
                lambda: self._backlog.settled_through() >= target, timeout
            ):
                pending = target - self._backlog.settled_through()
                raise TimeoutError(
                    f"the server has not answered for {pending:,} events or more recorded before "
                    f"flush() within {timeout:g} s; they are still being sent"
                )
            return self._backlog.counts()

    def close(self, give_up_after: float | None = None) -> Counts:
        """Record no more, send everything recorded and wait for the answers, then stop; the
        counts then. After `give_up_after` seconds, the events still unanswered are given up
        (`on_undelivered`). Closing again only returns the counts."""
        self._check_not_a_sender("close")
        with self._answered:
            if self._stopping.is_set():
                return self._backlog.counts()
            self._closed = True
            self._backlog.closing = True
            self._work.notify_all()
            self._room.notify_all()
            answered = self._answered.wait_for(
                lambda: self._backlog.settled_through() >= self._backlog.recorded, give_up_after
            )
            given_up = None
            if not answered:
                given_up = self._backlog.abandon(
                    f"not answered for within the {give_up_after:g} s close() allowed"
                )
                # Batches answered meanwhile are being told to their callbacks: a moment.
                self._answered.wait_for(
                    lambda: self._backlog.settled_through() >= self._backlog.recorded
                )
            self._stopping.set()
            self._work.notify_all()
        if given_up is not None:
            self._callbacks.undelivered(given_up)
        else:
            for sender in self._senders:
                sender.join()
        self._http.close()
        atexit.unregister(self._close_at_exit)
        return self.counts

    @property
    def counts(self) -> Counts:
        """What became of the events recorded so far."""
        with self._answered:
            return self._backlog.counts()

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("this client is closed and records no more events")

    def _check_not_a_sender(self, what: str) -> None:
        if threading.current_thread() in self._senders:
            raise RuntimeError(f"{what}() from a callback would wait for its own thread")

    def _wait_for_room(self) -> None:
        full = f"the client holds {self._backlog.capacity:,} unanswered events, as many as it may"
        if self._options.when_full == "raise":
            raise BufferFull(full)
        timeout = self._options.block_timeout
        if not self._room.wait_for(lambda: self._closed or self._backlog.has_room(), timeout):
            raise BufferFull(f"{full}, and none was answered for within {timeout:g} s")
        self._check_open()

    def _send_batches(self) -> None:
        while (batch := self._next_batch()) is not None:
            outcome = self._deliver(batch)
            if outcome is None:
                return
            with self._answered:
                if not self._backlog.claim(batch):
                    continue
            # Told before it counts as answered for, so that a flush returns after its callbacks;
            # outside the lock, so that a callback may record.
            self._callbacks.report(outcome)
            with self._answered:
                self._backlog.settle(batch, outcome)
                self._room.notify_all()
                self._answered.notify_all()

    def _next_batch(self) -> Batch | None:
        with self._work:
            while not self._stopping.is_set():
                due = self._backlog.due_in(time.monotonic())
                if due == 0:
                    batch = self._backlog.take()
                    if self._backlog.due_in(time.monotonic()) == 0:
                        self._work.notify()
                    return batch
                self._work.wait(due)
            return None

    def _deliver(self, batch: Batch) -> Outcome | None:
        """What became of `batch`; None if it was given up meanwhile."""
        try:
            return run(
                delivery(batch, self._options.retries, self._jitter), self._post, self._pause
            )
        except Stopped:
            return None
        except Exception as exc:
            if self._stopping.is_set():
                return None
            log.exception("delivering %d events failed", len(batch.events))
            events = tuple(event.event() for event in batch.events)
            return Outcome(undelivered=[Undelivered(events, f"the client failed: {exc!r}", None)])

    def _post(self, body: bytes) -> Answer:
        try:
            return self._http.post(PATH, content=body)
        except httpx.RequestError as exc:
            return exc

    def _pause(self, seconds: float) -> None:
        if self._stopping.wait(seconds):
            raise Stopped

    def _close_at_exit(self) -> None:
        self.close(self._options.exit_timeout)
