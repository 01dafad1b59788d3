"""The events a client holds until the server has answered for them: waiting for a batch, or
in a batch on its way; and the counts of what became of the others."""

import gzip
from collections import deque
from dataclasses import dataclass

from tokenpulse.client.events import Recorded
from tokenpulse.client.reports import Counts, Outcome, Undelivered

BATCH_BYTES = 5 * 1024 * 1024
"""Most JSON bytes in one request: half of what a server takes by default, so that a batch of
large events is cut before it is refused."""
GZIP_LEVEL = 1
"""Cheap compression: a gateway's CPU is worth more than a few bytes on the wire."""


@dataclass(frozen=True)
class Batch:
    events: tuple[Recorded, ...]

    @property
    def first(self) -> int:
        return self.events[0].seq


def request_body(events: tuple[Recorded, ...]) -> bytes:
    """`{"events": [...]}` of `events`, gzipped."""
    joined = b'{"events":[' + b",".join(event.json for event in events) + b"]}"
    return gzip.compress(joined, compresslevel=GZIP_LEVEL)


class Backlog:
    """Events in the order they were recorded, each held until its batch is answered for.

    Not thread-safe: its client guards it. A batch is due once it is full, once its first
    event has waited `max_wait` seconds, or at once for the events a flush or the close waits
    for.
    """

    def __init__(self, *, capacity: int, batch_size: int, max_wait: float) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.max_wait = max_wait
        self.closing = False
        self._waiting: deque[Recorded] = deque()
        self._waiting_bytes = 0
        self._sending: dict[int, Batch] = {}
        self._answered: set[int] = set()
        """Batches in `_sending` whose outcome is being told to the caller: no longer given up."""
        self._held = 0
        self._recorded = 0
        self._flush_through = 0
        self._accepted = self._duplicates = self._rejected = self._undelivered = 0

    @property
    def recorded(self) -> int:
        return self._recorded

    def has_room(self) -> bool:
        return self._held < self.capacity

    def add(self, event_id: str, json: bytes, at: float) -> bool:
        """Hold one more event; whether a sender should look again at when a batch is due."""
        self._waiting.append(Recorded(self._recorded, event_id, json, at))
        before = self._waiting_bytes
        self._waiting_bytes += len(json) + 1
        self._recorded += 1
        self._held += 1
        return (
            len(self._waiting) in (1, self.batch_size)
            or before < BATCH_BYTES <= self._waiting_bytes
        )

    def due_in(self, now: float) -> float | None:
        """Seconds until a batch is due (0: now); None while no event waits."""
        if not self._waiting:
            return None
        first = self._waiting[0]
        if (
            self.closing
            or first.seq < self._flush_through
            or len(self._waiting) >= self.batch_size
            or self._waiting_bytes >= BATCH_BYTES
        ):
            return 0.0
        return max(0.0, first.at + self.max_wait - now)

    def take(self) -> Batch:
        """The next batch of waiting events, in order: at most `batch_size` of them and
        BATCH_BYTES of JSON, and at least one."""
        events = [self._waiting.popleft()]
        size = len(events[0].json) + 1
        while (
            self._waiting
            and len(events) < self.batch_size
            and size + len(self._waiting[0].json) + 1 <= BATCH_BYTES
        ):
            event = self._waiting.popleft()
            size += len(event.json) + 1
            events.append(event)
        self._waiting_bytes -= size
        batch = Batch(tuple(events))
        self._sending[batch.first] = batch
        return batch

    def claim(self, batch: Batch) -> bool:
        """Keep `batch`, answered for, from being given up while its outcome is told; False if
        it was given up already."""
        if self._sending.get(batch.first) is not batch:
            return False
        self._answered.add(batch.first)
        return True

    def settle(self, batch: Batch, outcome: Outcome) -> bool:
        """Count what became of `batch`; False (and nothing counted) if it was abandoned."""
        self._answered.discard(batch.first)
        if self._sending.pop(batch.first, None) is not batch:
            return False
        self._held -= len(batch.events)
        self._accepted += outcome.accepted
        self._duplicates += outcome.duplicates
        self._rejected += len(outcome.rejected)
        self._undelivered += sum(len(failure.events) for failure in outcome.undelivered)
        return True

    def flush(self) -> int:
        """Send every event recorded so far without waiting for its batch to fill; how many
        events that is."""
        self._flush_through = self._recorded
        return self._recorded

    def settled_through(self) -> int:
        """How many of the first events recorded are all answered for."""
        return min((*self._sending, self._waiting[0].seq if self._waiting else self._recorded))

    def reclaim(self) -> None:
        """Put the events of every batch on its way back with those waiting, in order: their
        senders are gone, and the events are sent again."""
        events = [event for batch in self._sending.values() for event in batch.events]
        events += self._waiting
        events.sort(key=lambda event: event.seq)
        self._sending.clear()
        self._waiting = deque(events)
        self._waiting_bytes = sum(len(event.json) + 1 for event in events)

    def abandon(self, reason: str) -> Undelivered | None:
        """Stop holding every event not answered for, counted undelivered; None if none was."""
        given_up = [batch for batch in self._sending.values() if batch.first not in self._answered]
        events = sorted(
            [event for batch in given_up for event in batch.events] + list(self._waiting),
            key=lambda event: event.seq,
        )
        for batch in given_up:
            del self._sending[batch.first]
        self._waiting.clear()
        self._waiting_bytes = 0
        self._held -= len(events)
        self._undelivered += len(events)
        if not events:
            return None
        return Undelivered(tuple(event.event() for event in events), reason, status=None)

    def counts(self) -> Counts:
        return Counts(
            recorded=self._recorded,
            accepted=self._accepted,
            duplicates=self._duplicates,
            rejected=self._rejected,
            undelivered=self._undelivered,
        )
