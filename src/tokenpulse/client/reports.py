"""What becomes of recorded events, as the client tells its caller: the events the server
rejected, those it could not deliver, and the counts of every outcome."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tokenpulse.client")


@dataclass(frozen=True)
class Problem:
    """What the server found wrong with an event; `field` is None for the event as a whole."""

    field: str | None
    message: str


@dataclass(frozen=True)
class Rejected:
    """An event the server refused for good: sending it again cannot change the answer."""

    event: dict[str, Any]
    problems: tuple[Problem, ...]

    def __str__(self) -> str:
        found = "; ".join(
            problem.message if problem.field is None else f"{problem.field} {problem.message}"
            for problem in self.problems
        )
        return f"event {self.event.get('event_id')} was rejected: {found}"


@dataclass(frozen=True)
class Undelivered:
    """Events the client stopped sending without the server's answer for them: the server
    refused the requests themselves (`status`), or no answer came in the time allowed (None).
    Unanswered events may have been stored all the same; sending them again, with the same ids,
    is always safe."""

    events: tuple[dict[str, Any], ...]
    reason: str
    status: int | None

    def __str__(self) -> str:
        ids = [event.get("event_id") for event in self.events]
        if len(ids) == 1:
            return f"event {ids[0]} was not delivered: {self.reason}"
        return f"{len(ids):,} events were not delivered (the first {ids[0]}): {self.reason}"


@dataclass
class Outcome:
    """What became of the events of one batch."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    undelivered: list[Undelivered] = field(default_factory=list)


OnRejected = Callable[[Rejected], object]
OnUndelivered = Callable[[Undelivered], object]


@dataclass(frozen=True)
class Counts:
    """Every recorded event ends as exactly one of accepted, duplicate, rejected or undelivered;
    until then it is pending."""

    recorded: int
    accepted: int
    duplicates: int
    rejected: int
    undelivered: int

    @property
    def pending(self) -> int:
        return self.recorded - self.accepted - self.duplicates - self.rejected - self.undelivered


@dataclass(frozen=True)
class Callbacks:
    """The caller's callbacks. Each outcome is logged on the `tokenpulse.client` logger, with a
    callback or without; a callback that raises is logged and changes nothing."""

    on_rejected: OnRejected | None
    on_undelivered: OnUndelivered | None

    def report(self, outcome: Outcome) -> None:
        for rejection in outcome.rejected:
            self.rejected(rejection)
        for failure in outcome.undelivered:
            self.undelivered(failure)

    def rejected(self, rejection: Rejected) -> None:
        log.warning("%s", rejection)
        if self.on_rejected is not None:
            try:
                self.on_rejected(rejection)
            except Exception:
                log.exception("on_rejected raised for event %s", rejection.event.get("event_id"))

    def undelivered(self, failure: Undelivered) -> None:
        log.error("%s", failure)
        if self.on_undelivered is not None:
            try:
                self.on_undelivered(failure)
            except Exception:
                log.exception("on_undelivered raised for %d events", len(failure.events))
