"""Exactly once: an event id is counted once per tenant, across requests and inside one batch."""

import asyncio
from typing import Any

import httpx

from tests.factories import event
from tokenpulse.ingest.writer import STATEMENT_MAX_EVENTS


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await client.post("/v1/events", json={"events": events})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def total(client: httpx.AsyncClient, **params: str) -> dict[str, Any]:
    response = await client.get("/v1/totals", params={"window": "30d", **params})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    assert len(results) <= 1
    return results[0] if results else {"requests": 0, "total_tokens": 0}


async def test_resending_an_event_counts_it_as_a_duplicate_and_not_again(
    client: httpx.AsyncClient,
) -> None:
    first = event(event_id="req-1", input_tokens=100, output_tokens=50)
    assert await post(client, [first]) == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
    }

    assert await post(client, [first]) == {
        "accepted": 0,
        "duplicates": 1,
        "rejected": 0,
        "errors": [],
    }
    totals = await total(client)
    assert (totals["requests"], totals["total_tokens"]) == (1, 150)


async def test_a_duplicate_with_other_counts_is_still_a_duplicate_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await post(client, [event(event_id="req-1", input_tokens=100, output_tokens=50)])

    again = await post(client, [event(event_id="req-1", input_tokens=9999, output_tokens=9999)])

    assert (again["accepted"], again["duplicates"]) == (0, 1)
    totals = await total(client)
    assert (totals["requests"], totals["total_tokens"]) == (1, 150)


async def test_a_repeat_inside_one_batch_is_a_duplicate_and_the_first_one_is_stored(
    client: httpx.AsyncClient,
) -> None:
    batch = [
        event(event_id="req-1", input_tokens=100, output_tokens=0),
        event(event_id="req-2", input_tokens=10, output_tokens=0),
        event(event_id="req-1", input_tokens=7777, output_tokens=0),
    ]

    result = await post(client, batch)

    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2, 1, 0)
    totals = await total(client)
    assert (totals["requests"], totals["input_tokens"]) == (2, 110)


async def test_a_repeat_far_apart_in_a_large_batch_is_a_duplicate_and_the_first_is_stored(
    client: httpx.AsyncClient,
) -> None:
    # Stored a statement of STATEMENT_MAX_EVENTS at a time, in the order of their keys: the
    # first req-0999 is the last of the first statement, its repeat the first of the second.
    batch = [event(event_id=f"req-{n:04}", input_tokens=1, output_tokens=0) for n in range(2499)]
    batch.append(event(event_id="req-0999", input_tokens=7777, output_tokens=0))
    assert STATEMENT_MAX_EVENTS == 1000

    result = await post(client, batch)

    assert (result["accepted"], result["duplicates"], result["rejected"]) == (2499, 1, 0)
    totals = await total(client)
    assert (totals["requests"], totals["input_tokens"]) == (2499, 2499)


async def test_the_same_event_id_in_two_tenants_is_two_events(
    client: httpx.AsyncClient,
) -> None:
    result = await post(
        client, [event(event_id="req-1", tenant="acme"), event(event_id="req-1", tenant="globex")]
    )

    assert (result["accepted"], result["duplicates"]) == (2, 0)
    assert (await total(client, tenant="acme"))["requests"] == 1
    assert (await total(client, tenant="globex"))["requests"] == 1


async def test_every_event_ends_as_exactly_one_of_accepted_duplicate_or_rejected(
    client: httpx.AsyncClient,
) -> None:
    await post(client, [event(event_id=f"old-{n}") for n in range(3)])
    batch = [
        *(event(event_id=f"old-{n}") for n in range(3)),
        *(event(event_id=f"new-{n}") for n in range(5)),
        event(event_id="new-0"),
        event(event_id="bad-1", input_tokens="12"),
        event(event_id="bad-2", model=...),
    ]

    result = await post(client, batch)

    assert (result["accepted"], result["duplicates"], result["rejected"]) == (5, 4, 2)
    assert result["accepted"] + result["duplicates"] + result["rejected"] == len(batch)
    assert [error["index"] for error in result["errors"]] == [9, 10]
    assert (await total(client))["requests"] == 8


async def test_concurrent_requests_with_overlapping_ids_count_each_id_once(
    client: httpx.AsyncClient,
) -> None:
    # 20 requests at once, each sending ids 0..49 shifted by its number: ids 0..68 overall.
    batches = [
        [event(event_id=f"req-{n + shift}", input_tokens=1, output_tokens=0) for n in range(50)]
        for shift in range(20)
    ]

    results = await asyncio.gather(*(post(client, batch) for batch in batches))

    assert sum(result["accepted"] for result in results) == 69
    assert sum(result["duplicates"] for result in results) == 20 * 50 - 69
    totals = await total(client)
    assert (totals["requests"], totals["input_tokens"]) == (69, 69)
