"""Visibility: once a 200 is sent, every aggregate already includes the events it acknowledged."""

import asyncio

import httpx

from tests.factories import event


async def test_totals_include_an_event_as_soon_as_its_ingest_is_answered(
    client: httpx.AsyncClient,
) -> None:
    for n in range(1, 21):
        response = await client.post("/v1/events", json=event(input_tokens=n, output_tokens=0))
        assert response.status_code == 200

        totals = await client.get("/v1/totals", params={"window": "1h"})

        assert totals.json()["results"][0]["requests"] == n


async def test_each_of_many_concurrent_writers_reads_its_own_event_in_the_series(
    client: httpx.AsyncClient,
) -> None:
    async def send_then_read(n: int) -> int:
        response = await client.post(
            "/v1/events", json=event(event_id=f"req-{n}", api_key_id=f"key-{n}")
        )
        assert response.status_code == 200
        series = await client.get(
            "/v1/usage",
            params={"bucket": "1h", "start": "2026-11-27T11:00:00Z", "api_key_id": f"key-{n}"},
        )
        results = series.json()["data"][0]["results"]
        return len(results) and results[0]["requests"]

    seen = await asyncio.gather(*(send_then_read(n) for n in range(30)))

    assert seen == [1] * 30
