"""Requests tried again after a 429, a 503 or a timeout, as Retry-After says, until a deadline."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

# Answers that say "not now". A 500 is among them because a proxy or a restarting server may
# answer it for a moment; a lasting one ends at the deadline.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
FIRST_BACKOFF_SECONDS = 0.25
LONGEST_BACKOFF_SECONDS = 8.0


class GaveUp(Exception):
    """The server did not answer for good before the deadline."""


@dataclass
class Traffic:
    """What went over the wire so far."""

    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0


async def request_until_answered(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    give_up_seconds: float,
    traffic: Traffic | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """The first answer that is not "not now"; the same request again until then.

    A request without an answer (a timeout, a dropped connection) may have been carried out:
    only idempotent requests belong here, such as ingest, whose duplicates count once.
    """
    traffic = traffic if traffic is not None else Traffic()
    deadline = time.monotonic() + give_up_seconds
    backoff = FIRST_BACKOFF_SECONDS
    content = kwargs.get("content")
    while True:
        traffic.requests += 1
        if isinstance(content, bytes):
            traffic.bytes_sent += len(content)
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__} {exc}".strip()
            delay = backoff
        else:
            if response.status_code not in RETRIED_STATUSES:
                return response
            problem = describe(response)
            delay = retry_after(response) or backoff
        backoff = min(backoff * 2, LONGEST_BACKOFF_SECONDS)
        if time.monotonic() + delay > deadline:
            raise GaveUp(
                f"{method} {url} was not answered within {give_up_seconds:g} s; "
                f"the last attempt: {problem}"
            )
        traffic.retries += 1
        await asyncio.sleep(delay)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds; its HTTP-date form is not used by tokenpulse."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def describe(response: httpx.Response) -> str:
    """The status and the server's own message, if it sent one."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return f"{response.status_code} {message}".strip()
