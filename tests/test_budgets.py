"""Budgets through HTTP: what may be set, the check a gateway asks before a call, and the crossings
notified, exactly once each, at the exact event."""

import asyncio
from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import NOW, ClientFactory, Ticker
from tests.factories import event
from tokenpulse.instants import format_rfc3339

FAST = {
    "notify_interval": timedelta(milliseconds=20),
    "materialise_interval": timedelta(milliseconds=20),
}


async def _notified(
    client: httpx.AsyncClient, monotonic: Ticker, count: int, **query: str
) -> list[dict[str, Any]]:
    """The notifications listed once `count` are, newest first; the searches run as time passes."""
    for _ in range(200):
        monotonic.advance(1)
        listed = (await client.get("/v1/notifications", params=query)).json()["notifications"]
        if len(listed) >= count:
            return listed
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} notifications never came: {listed}")


async def test_a_daily_token_budget_notifies_each_threshold_once_at_the_exact_crossing_event(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    async with make_client(**FAST) as client:
        made = await client.post(
            "/v1/budgets",
            json={
                "tenant": "acme",
                "metric": "total_tokens",
                "limit": 10000,
                "window": "day",
                "thresholds": [50, 100],
            },
        )
        assert made.status_code == 201, made.text
        budget = made.json()
        events = [event(event_id=f"e{i}", at=NOW - timedelta(minutes=10 - i)) for i in range(6)]
        assert (await client.post("/v1/events", json={"events": events})).status_code == 200
        listed = await _notified(client, monotonic, 2)
        bodies = sorted((n["body"] for n in listed), key=lambda body: body["amount"])
        assert [
            (b["threshold"], b["amount"], b["event_id"], b["value_at_crossing"]) for b in bodies
        ] == [
            (50, 5000, "e2", 6000),
            (100, 10000, "e4", 10000),
        ]
        assert bodies[0]["budget_id"] == budget["id"]
        assert bodies[0]["crossed_at"] == format_rfc3339(NOW - timedelta(minutes=8))
        assert bodies[0]["window_start"] == "2026-11-27T00:00:00Z"
        check = await client.get("/v1/budgets/check", params={"tenant": "acme"})
        assert check.json()["budgets"][0]["used"] == 12000
        assert check.json()["exceeded"] is True
        monotonic.advance(5)
        await asyncio.sleep(0.3)
        assert len((await client.get("/v1/notifications")).json()["notifications"]) == 2
