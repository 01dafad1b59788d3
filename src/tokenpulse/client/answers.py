"""What an answer of `POST /v1/events` means for the events it answers for."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tokenpulse.client.reports import Problem

# "Not now": the same events go again. A 500, 502 or 504 is among them because a proxy or a
# restarting server may answer so for a moment, and a 408 because a body that arrived too
# slowly says nothing about its events.
RETRIED_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Report:
    """A 200's or 422's body: what the server did with each event of the request."""

    accepted: int
    duplicates: int
    problems: dict[int, tuple[Problem, ...]]
    """The rejected events the answer names, by their index in the request."""
    unnamed: int
    """Rejected events the answer counts without naming them (it names at most 100)."""


@dataclass(frozen=True)
class TryAgain:
    """Nothing is known of the request's events: send them again."""

    problem: str
    status: int | None
    """None when no answer came at all."""
    retry_after: float | None


@dataclass(frozen=True)
class TooLarge:
    """A 413: the request holds too many events or bytes, or an event too many values."""

    problem: str


@dataclass(frozen=True)
class Refused:
    """The server refused the request itself (its key, its scope, its address, its format):
    the same request can never succeed."""

    problem: str
    status: int | None


Verdict = Report | TryAgain | TooLarge | Refused


def verdict(answer: httpx.Response | httpx.RequestError, events: int) -> Verdict:
    """What `answer`, to a request of `events` events, says to do next."""
    if isinstance(answer, httpx.RequestError):
        return TryAgain(f"{type(answer).__name__} {answer}".strip(), None, retry_after=None)
    status = answer.status_code
    if status in RETRIED_STATUSES:
        return TryAgain(describe(answer), status, retry_after(answer))
    if status == 413:
        return TooLarge(describe(answer))
    if status in (200, 422):
        report = _report(answer, events)
        if report is not None:
            return report
        return Refused(f"{status} without an ingest report: {answer.text[:200]}", status)
    return Refused(describe(answer), status)


def retry_after(answer: httpx.Response) -> float | None:
    """Retry-After in seconds, from either of its forms; None without one."""
    value = answer.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds() if when.tzinfo else math.nan
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def describe(answer: httpx.Response) -> str:
    """The status and the server's own message, if it sent one."""
    try:
        message = answer.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = answer.text[:200]
    return f"{answer.status_code} {message}".strip()


def _report(answer: httpx.Response, events: int) -> Report | None:
    """The answer's report, if it is one whose counts add up to the request's events."""
    try:
        body = answer.json()
        counts = [body[name] for name in ("accepted", "duplicates", "rejected")]
        problems = {
            _index(error["index"], events): tuple(
                Problem(problem.get("field"), str(problem.get("message")))
                for problem in error["errors"]
            )
            for error in body.get("errors") or []
        }
        unnamed = body.get("errors_omitted") or 0
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    accepted, duplicates, rejected = counts
    if not all(isinstance(count, int) for count in (*counts, unnamed)):
        return None
    if accepted + duplicates + rejected != events or len(problems) + unnamed != rejected:
        return None
    return Report(accepted, duplicates, problems, unnamed)


def _index(value: Any, events: int) -> int:
    if not isinstance(value, int) or not 0 <= value < events:
        raise ValueError(f"no event has index {value!r}")
    return value
