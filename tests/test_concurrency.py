"""Two worker processes, many clients, overlapping ids: no deadlock, no error, totals exact."""

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, Keys, bearer
from tests.servers import running_server
from tokenpulse.instants import format_rfc3339
from tokenpulse.tables import ROLLUP_TABLES

CLIENTS = 8
REQUESTS_PER_CLIENT = 25
EVENTS_PER_REQUEST = 100
DISTINCT_IDS = 3000


def usage_event(number: int, occurred_at: datetime) -> dict[str, Any]:
    """Event number `number`: the same fields whichever client sends it."""
    return {
        "event_id": f"req-{number}",
        "occurred_at": format_rfc3339(occurred_at + timedelta(seconds=number % 120)),
        "tenant": f"tenant-{number % 7}",
        "model": f"model-{number % 3}",
        "api_key_id": f"key-{number % 11}",
        "input_tokens": number,
        "cached_input_tokens": number // 2,
        "cache_write_input_tokens": number // 4,
        "output_tokens": 2 * number,
        "reasoning_tokens": number // 3,
    }


@pytest.mark.process
async def test_two_workers_store_overlapping_batches_exactly_once(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    started = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=3)
    rng = random.Random(20261127)
    batches = [
        [
            usage_event(number, started)
            for number in rng.sample(range(DISTINCT_IDS), EVENTS_PER_REQUEST)
        ]
        for _ in range(CLIENTS * REQUESTS_PER_CLIENT)
    ]
    sent = {int(e["event_id"].removeprefix("req-")) for batch in batches for e in batch}

    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, "--workers", "2", env=env) as server:
        async with httpx.AsyncClient(
            base_url=server.url, timeout=60, headers=bearer(keys.admin)
        ) as http:

            async def client(number: int) -> list[dict[str, Any]]:
                answers = []
                for batch in batches[number::CLIENTS]:
                    response = await http.post("/v1/events", json={"events": batch})
                    assert response.status_code == 200, response.text
                    answers.append(response.json())
                return answers

            answers = [
                a
                for per_client in await asyncio.gather(*map(client, range(CLIENTS)))
                for a in per_client
            ]
            totals = (await http.get("/v1/totals", params={"window": "1h"})).json()["results"]

    assert sum(a["accepted"] for a in answers) == len(sent)
    assert sum(a["duplicates"] for a in answers) == sum(map(len, batches)) - len(sent)
    assert totals == [
        {
            "requests": len(sent),
            "input_tokens": sum(sent),
            "cached_input_tokens": sum(n // 2 for n in sent),
            "cache_write_input_tokens": sum(n // 4 for n in sent),
            "output_tokens": sum(2 * n for n in sent),
            "reasoning_tokens": sum(n // 3 for n in sent),
            "total_tokens": sum(3 * n for n in sent),
            "cost": None,
        }
    ]
    async with db.connect() as connection:
        stored = await connection.exec_driver_sql("SELECT count(*) FROM usage_event")
        assert stored.scalar_one() == len(sent)
        for tables in ROLLUP_TABLES.values():
            for table in tables:
                rollup = await connection.exec_driver_sql(
                    f"SELECT sum(requests), sum(input_tokens) FROM {table.name}"
                )
                assert tuple(rollup.one()) == (len(sent), sum(sent)), table.name
