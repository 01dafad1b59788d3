"""Building valid usage events for tests, changed only where a test says so."""

import itertools
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.conftest import NOW
from tokenpulse.instants import format_rfc3339

_ids = itertools.count(1)


def event(*, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """A valid event (tenant "acme", model "m-large", one minute before NOW), with `fields` changed.

    A field given as `...` is left out.
    """
    body: dict[str, Any] = {
        "event_id": f"evt-{next(_ids)}",
        "occurred_at": format_rfc3339(at if at is not None else NOW - timedelta(minutes=1)),
        "tenant": "acme",
        "model": "m-large",
        "input_tokens": 1200,
        "output_tokens": 800,
    }
    body.update(fields)
    return {name: value for name, value in body.items() if value is not ...}


def measures(*events: dict[str, Any], cost: str | None = None) -> dict[str, Any]:
    """The sums that aggregates answer for `events`, with `cost` (None: no model of theirs is
    priced)."""
    sums = {
        name: sum(e.get(name, 0) for e in events)
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "cache_write_input_tokens",
            "output_tokens",
            "reasoning_tokens",
        )
    }
    return {
        "requests": len(events),
        **sums,
        "total_tokens": sums["input_tokens"] + sums["output_tokens"],
        "cost": cost,
    }


async def post_accepted(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    """Send `events` in one batch, each of which must be accepted."""
    answer = await client.post("/v1/events", json={"events": list(events)})
    assert answer.json()["accepted"] == len(events), answer.text
