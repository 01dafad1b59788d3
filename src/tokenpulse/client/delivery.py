"""Delivering one batch until the server has answered for each of its events: sent again
while no answer comes, cut in halves while it is too large, sent again without its rejected
events while an answer does not name them all. Written once for both clients: it says what to
do next (send a body, wait), and each client does it in its own way."""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass

import httpx

from tokenpulse.client.answers import Refused, Report, TooLarge, TryAgain, verdict
from tokenpulse.client.backlog import Batch, request_body
from tokenpulse.client.events import Recorded
from tokenpulse.client.reports import Outcome, Problem, Rejected, Undelivered
from tokenpulse.client.retries import Retries

log = logging.getLogger("tokenpulse.client")

PATH = "/v1/events"


class Stopped(Exception):
    """Raised by a client's wait to end a delivery it no longer wants: its events were given
    up."""


@dataclass(frozen=True)
class Send:
    """POST this gzipped `{"events": [...]}` body, and answer with what came back."""

    body: bytes


@dataclass(frozen=True)
class Wait:
    seconds: float


Answer = httpx.Response | httpx.RequestError
Delivery = Generator[Send | Wait, Answer | None, Outcome]


def delivery(
    batch: Batch,
    retries: Retries,
    jitter: random.Random,
    clock: Callable[[], float] = time.monotonic,
) -> Delivery:
    """The steps that deliver `batch`; what became of its events once they are done."""
    outcome = Outcome()
    give_up_at = None if retries.give_up_after is None else clock() + retries.give_up_after
    yield from _deliver(list(batch.events), outcome, retries, give_up_at, jitter, clock)
    return outcome


def _deliver(
    events: list[Recorded],
    outcome: Outcome,
    retries: Retries,
    give_up_at: float | None,
    jitter: random.Random,
    clock: Callable[[], float],
) -> Generator[Send | Wait, Answer | None, None]:
    failures = 0
    # Events an answer counted as accepted that go again with the rest: they come back as
    # duplicates or, if the rest are never answered for, are among the undelivered.
    credited = 0
    while True:
        answer = yield Send(request_body(tuple(events)))
        assert answer is not None, "every Send is answered"
        found = verdict(answer, len(events))
        if isinstance(found, Report) and found.unnamed and not found.problems:
            # Sent again, the same events would be answered the same way, forever.
            found = Refused("an answer that names none of the events it rejects", None)
        if isinstance(found, Report):
            outcome.rejected += [
                Rejected(events[index].event(), problems)
                for index, problems in sorted(found.problems.items())
            ]
            if failures:
                log.info(
                    "%s answered %d events after %d failed attempts", PATH, len(events), failures
                )
            outcome.accepted += found.accepted
            if not found.unnamed:
                outcome.duplicates += found.duplicates - credited
                return
            # The answer named only some of the rejected events: the rest go again, to have
            # the others named.
            credited += found.accepted
            events = [event for index, event in enumerate(events) if index not in found.problems]
            failures = 0
            continue
        if isinstance(found, TooLarge):
            if len(events) == 1:
                outcome.rejected.append(
                    Rejected(events[0].event(), (Problem(None, found.problem),))
                )
                return
            half = len(events) // 2
            log.info(
                "%s: %s; sending the %d events in two halves", PATH, found.problem, len(events)
            )
            yield from _deliver(events[:half], outcome, retries, give_up_at, jitter, clock)
            yield from _deliver(events[half:], outcome, retries, give_up_at, jitter, clock)
            return
        elif isinstance(found, Refused):
            outcome.accepted -= credited
            outcome.undelivered.append(
                _undelivered(events, f"{PATH} answered {found.problem}", found.status)
            )
            return
        else:
            delay = retries.delay(failures, found.retry_after, jitter)
            failures += 1
            if give_up_at is not None and clock() + delay > give_up_at:
                reason = (
                    f"not answered for within {retries.give_up_after:g} s; the last attempt: "
                    f"{found.problem}"
                )
                outcome.accepted -= credited
                outcome.undelivered.append(_undelivered(events, reason, None))
                return
            _log_retry(found, len(events), delay)
            yield Wait(delay)


def _undelivered(events: list[Recorded], reason: str, status: int | None) -> Undelivered:
    return Undelivered(tuple(event.event() for event in events), reason, status)


def _log_retry(found: TryAgain, events: int, delay: float) -> None:
    # A rate limit is the server pacing its clients, not a fault.
    level = logging.INFO if found.status == 429 else logging.WARNING
    log.log(
        level, "%s: %s; sending its %d events again in %.1f s", PATH, found.problem, events, delay
    )


def run(steps: Delivery, send: Callable[[bytes], Answer], wait: Callable[[float], None]) -> Outcome:
    """Carry out a delivery's steps on this thread."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(send(step.body))
            else:
                wait(step.seconds)
                step = steps.send(None)
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome


async def run_async(steps: Delivery, send: Callable[[bytes], Awaitable[Answer]]) -> Outcome:
    """Carry out a delivery's steps in this event loop."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                step = steps.send(await send(step.body))
            else:
                await asyncio.sleep(step.seconds)
                step = steps.send(None)
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome
