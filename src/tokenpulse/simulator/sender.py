"""Posting batches to `POST /v1/events`: JSON or NDJSON, optionally gzipped, several at a time,
each until the server takes it."""

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from tokenpulse.simulator.launchday import Event
from tokenpulse.simulator.ledger import Ledger
from tokenpulse.simulator.retries import GaveUp, Traffic, describe, request_until_answered

Format = Literal["json", "ndjson"]

# Cheap compression: the gateway's CPU is worth more than a few bytes on the wire.
GZIP_LEVEL = 1


class DeliveryFailed(Exception):
    """A batch was refused for good, or the server did not take it before the deadline."""


@dataclass(frozen=True)
class Delivery:
    """How batches travel."""

    format: Format = "json"
    gzip: bool = False
    concurrency: int = 4
    give_up_seconds: float = 120.0
    """How long one batch may keep failing before the run stops."""


def encode(events: list[Event], delivery: Delivery) -> tuple[bytes, dict[str, str]]:
    """The request body for `events` and the headers that describe it."""
    if delivery.format == "json":
        body = json.dumps({"events": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
    else:
        compact = json.JSONEncoder(separators=(",", ":")).encode
        body = "\n".join(map(compact, events)).encode()
        headers = {"Content-Type": "application/x-ndjson"}
    if delivery.gzip:
        body = gzip.compress(body, compresslevel=GZIP_LEVEL)
        headers["Content-Encoding"] = "gzip"
    return body, headers


async def deliver(
    client: httpx.AsyncClient,
    batches: AsyncIterator[list[Event]],
    ledger: Ledger,
    delivery: Delivery,
    traffic: Traffic,
) -> None:
    """Send every batch, `delivery.concurrency` at a time, and record each answer in `ledger`."""
    queue: asyncio.Queue[tuple[int, list[Event]] | None] = asyncio.Queue(delivery.concurrency)

    async def cut() -> None:
        number = 0
        async for batch in batches:
            await queue.put((number, batch))
            number += 1
        for _ in range(delivery.concurrency):
            await queue.put(None)

    async def send() -> None:
        while (item := await queue.get()) is not None:
            number, events = item
            answer = await post_batch(client, events, delivery, traffic)
            ledger.record(number, events, answer)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(cut())
            for _ in range(delivery.concurrency):
                group.create_task(send())
    except* DeliveryFailed as failed:
        raise failed.exceptions[0] from None


async def post_batch(
    client: httpx.AsyncClient, events: list[Event], delivery: Delivery, traffic: Traffic
) -> dict[str, Any]:
    """The answer to `events`, sent until the server takes them: a 200's or 422's body."""
    body, headers = encode(events, delivery)
    try:
        response = await request_until_answered(
            client,
            "POST",
            "/v1/events",
            content=body,
            headers=headers,
            give_up_seconds=delivery.give_up_seconds,
            traffic=traffic,
        )
    except GaveUp as exc:
        raise DeliveryFailed(str(exc)) from None
    answer = _answer(response)
    if answer is None:
        raise DeliveryFailed(f"POST /v1/events answered {describe(response)}")
    return answer


def _answer(response: httpx.Response) -> dict[str, Any] | None:
    """The ingest report of a 200, or of a 422 that rejected every event."""
    if response.status_code not in (200, 422):
        return None
    try:
        answer = response.json()
    except ValueError:
        return None
    if isinstance(answer, dict) and {"accepted", "duplicates", "rejected"} <= answer.keys():
        return answer
    return None
