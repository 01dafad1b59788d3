"""Notifications across the death of the service: `tokenpulse serve` killed with SIGKILL while it
delivers, and while it searches for crossings, then started again on the same database. Every
crossing is then one notification, delivered to a real endpoint, every attempt under its one
`webhook-id`."""

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Keys, bearer
from tests.factories import event, post_accepted
from tests.faults import blocking, server_env
from tests.gateways import until
from tests.receivers import Receiver
from tests.servers import Server, start_server, stop_server
from tokenpulse.instants import format_rfc3339

FAST = {
    "notify_interval": "0.05",
    "materialise_interval": "0.05",
    # The receivers listen on 127.0.0.1.
    "webhook_private_addresses": "true",
}
STALLED_SEARCH = (
    "SELECT count(*) FROM pg_stat_activity AS a JOIN pg_locks AS l ON l.pid = a.pid"
    " WHERE a.datname = current_database() AND a.application_name = 'tokenpulse-materialiser'"
    " AND NOT l.granted AND l.relation = 'delivery'::regclass"
)
"""Sessions of the worker that searches for crossings, waiting to write a delivery: a search that
has recorded a crossing and not committed it."""
CROSSINGS = (
    "SELECT n.id, n.subject, n.amount, d.state FROM notification AS n"
    " LEFT JOIN delivery AS d ON d.notification_id = n.id ORDER BY n.amount"
)


def _client(server: Server, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers=bearer(key), timeout=30)


async def _started(log_dir: Path, env: dict[str, str], port: int | None = None) -> Server:
    return await asyncio.to_thread(start_server, log_dir, env=env, port=port)


def _killed(server: Server) -> None:
    server.process.kill()
    server.process.wait()


async def _crossings(database_url: str) -> list[asyncpg.Record]:
    """Every notification, with its delivery's state, as committed."""
    connection = await asyncpg.connect(database_url)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(CROSSINGS)
    finally:
        await connection.close()
    return rows


async def _search_stalled(database_url: str) -> bool:
    connection = await asyncpg.connect(database_url)
    try:
        stalled: int = await connection.fetchval(STALLED_SEARCH)
    finally:
        await connection.close()
    return stalled > 0


async def _delivered(database_url: str, count: int) -> bool:
    rows = await _crossings(database_url)
    return len(rows) == count and all(row["state"] == "delivered" for row in rows)


async def _setup(
    client: httpx.AsyncClient, receiver: Receiver, since: datetime, **budget: Any
) -> dict[str, Any]:
    """A webhook to `receiver` and an acme budget of total tokens since `since` notifying it."""
    made = await client.post("/v1/webhooks", json={"url": receiver.url})
    assert made.status_code == 201, made.text
    webhook: dict[str, Any] = made.json()
    answer = await client.post(
        "/v1/budgets",
        json={
            "tenant": "acme",
            "metric": "total_tokens",
            "window": "since",
            "since": format_rfc3339(since),
            "webhook_id": webhook["id"],
            **budget,
        },
    )
    assert answer.status_code == 201, answer.text
    return webhook


@pytest.mark.process
async def test_a_service_killed_mid_delivery_leaves_it_to_be_delivered_again_under_one_webhook_id(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    # A short attempt: the delivery is due again this long after its claim and 30 s more.
    env = server_env(database_url, **FAST, webhook_timeout="2")
    now = datetime.now(UTC)
    with Receiver(lambda seen: "hold" if seen == 0 else 200) as receiver:
        server = await _started(tmp_path, env)
        try:
            async with _client(server, keys.admin) as client:
                webhook = await _setup(client, receiver, now - timedelta(hours=1), limit=2000)
                await post_accepted(client, event(event_id="e1", at=now - timedelta(minutes=1)))
                (held,) = await receiver.until_received(1)
                await asyncio.to_thread(_killed, server)
            (before,) = await _crossings(database_url)
            assert before["state"] == "pending"
            server = await _started(tmp_path, env, port=server.port)
            await until(lambda: _delivered(database_url, 1), "the delivery made again")
            async with _client(server, keys.admin) as client:
                (listed,) = (await client.get("/v1/notifications")).json()["notifications"]
        finally:
            await asyncio.to_thread(stop_server, server)

    assert [row["id"] for row in await _crossings(database_url)] == [before["id"]]
    again = receiver.received[1:]
    assert [request.webhook_id for request in again] == [held.webhook_id]
    for request in (held, *again):
        assert request.verified(webhook["secret"]) == listed["body"]
    assert held.webhook_id == listed["id"] == before["id"]
    assert listed["body"]["event_id"] == "e1"
    (delivery,) = listed["deliveries"]
    assert delivery["state"] == "delivered"
    assert delivery["attempts"][-1]["status"] == 200


@pytest.mark.process
async def test_a_service_killed_mid_search_again_and_again_notifies_each_threshold_once(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = server_env(database_url, **FAST)
    now = datetime.now(UTC)
    # Each event brings 1,000 tokens of 10,000: five events cross five thresholds.
    thresholds = [10 * step for step in range(1, 11)]
    # The second round's events come after the first's: they cross thresholds of their own and
    # move no crossing of the first.
    rounds = [
        [
            event(at=now - timedelta(minutes=3 - turn), input_tokens=600, output_tokens=400)
            for _ in range(5)
        ]
        for turn in range(2)
    ]
    with Receiver() as receiver:
        server = await _started(tmp_path, env)
        try:
            async with _client(server, keys.admin) as client:
                webhook = await _setup(
                    client, receiver, now - timedelta(hours=1), limit=10000, thresholds=thresholds
                )
            for kill, events in enumerate(rounds):
                async with blocking(database_url) as blocker:
                    # A search records a crossing, then waits to write its delivery.
                    await blocker.execute("LOCK TABLE delivery IN SHARE MODE")
                    async with _client(server, keys.admin) as client:
                        await post_accepted(client, *events)
                    await until(
                        lambda: _search_stalled(database_url), "a search stalled mid-transaction"
                    )
                    await asyncio.to_thread(_killed, server)
                assert len(await _crossings(database_url)) == 5 * kill
                server = await _started(tmp_path, env, port=server.port)
                await until(
                    partial(_delivered, database_url, 5 * (kill + 1)),
                    f"the crossings of round {kill + 1} delivered",
                )
            async with _client(server, keys.admin) as client:
                listed = (await client.get("/v1/notifications")).json()["notifications"]
        finally:
            await asyncio.to_thread(stop_server, server)

    rows = await _crossings(database_url)
    assert sorted(row["amount"] for row in rows) == [100 * t for t in thresholds]
    assert len({row["subject"] for row in rows}) == 1
    assert set(receiver.ids()) == {row["id"] for row in rows}
    bodies = {notification["id"]: notification["body"] for notification in listed}
    for request in receiver.received:
        assert request.verified(webhook["secret"]) == bodies[request.webhook_id]
    assert sorted(body["threshold"] for body in bodies.values()) == thresholds
