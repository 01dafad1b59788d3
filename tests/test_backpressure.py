"""Overload and outages: quick 503s with Retry-After, never a hang, and nothing acked lost."""

import asyncio

import httpx
from google.rpc.status_pb2 import Status
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ClientFactory
from tests.factories import event
from tests.faults import flushes_waiting, holds
from tests.gateways import until
from tokenpulse.app import create_app
from tokenpulse.settings import Settings

UNREACHABLE = "postgresql://tokenpulse@127.0.0.1:1/tokenpulse"


async def test_every_endpoint_that_needs_the_database_answers_503_when_it_is_unreachable() -> None:
    app = create_app(
        Settings(database_url=UNREACHABLE, db_connect_timeout=1, retry_after_seconds=3)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": "Bearer tp_0123456789abcdef_" + "A" * 43}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers, timeout=10
        ) as client:
            answers = [
                await client.post("/v1/events", json=event()),
                await client.get("/v1/totals", params={"window": "1h"}),
                await client.post("/v1/integrations/litellm", json=[]),
                await client.get("/readyz"),
            ]
            traces = await client.post(
                "/v1/traces", content=b"", headers={"Content-Type": "application/x-protobuf"}
            )
            alive = await client.get("/healthz")

    assert [answer.status_code for answer in answers] == [503, 503, 503, 503]
    assert [answer.headers.get("retry-after") for answer in answers[:3]] == ["3", "3", "3"]
    assert answers[0].json()["error"] == {
        "code": "unavailable",
        "message": "the database is unavailable",
    }
    # OTLP's own answer, which exporters read to retry: a Status, in the request's encoding.
    assert (traces.status_code, traces.headers["retry-after"]) == (503, "3")
    assert traces.headers["content-type"] == "application/x-protobuf"
    status = Status.FromString(traces.content)
    assert (status.code, status.message) == (14, "the database is unavailable")
    assert alive.status_code == 200


async def test_a_full_queue_answers_503_at_once_and_a_timed_out_request_is_not_stored_later(
    make_client: ClientFactory, db: AsyncEngine, database_url: str
) -> None:
    async with (
        make_client(
            queue_max_events=3, batch_max_concurrent_flushes=1, ingest_timeout=1, tenant_share=1
        ) as client,
        db.connect() as blocker,
    ):
        # Writers block on the pending deltas until this transaction ends: a stalled database.
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        in_flush = asyncio.create_task(
            client.post("/v1/events", json={"events": [event(event_id="a")]})
        )
        await until(lambda: flushes_waiting(database_url), "the flush of 'a' waiting on the lock")
        queued = asyncio.create_task(
            client.post("/v1/events", json={"events": [event(event_id="b"), event(event_id="c")]})
        )
        await until(lambda: holds(client, 3), "'b' and 'c' queued behind it")
        refused = await client.post("/v1/events", json=event(event_id="d"))

        timed_out = [await in_flush, await queued]
        await blocker.rollback()
        await until(lambda: holds(client, 0), "the flush of 'a' committed")
        stored = (await client.get("/v1/totals", params={"window": "1h"})).json()["results"]
        resent = await client.post(
            "/v1/events", json={"events": [event(event_id=i) for i in "abcd"]}
        )

    # Refused for the full queue, not left to time out like the requests before it.
    assert refused.status_code == 503
    assert refused.json()["error"]["message"] == "ingest is overloaded; retry later"
    assert refused.headers["retry-after"] == "1"
    assert [answer.status_code for answer in timed_out] == [503, 503]
    assert {answer.json()["error"]["message"] for answer in timed_out} == {
        "the database is unavailable"
    }
    # "a" was in the transaction that the stall held up: it committed once the stall ended.
    # "b" and "c" still waited in the queue when their request gave up: they were dropped.
    assert [result["requests"] for result in stored] == [1]
    assert (resent.json()["accepted"], resent.json()["duplicates"]) == (3, 1)


async def test_body_bytes_held_by_a_worker_are_bounded_and_beyond_them_ingest_answers_503(
    make_client: ClientFactory, db: AsyncEngine, database_url: str
) -> None:
    batch = {"events": [event() for _ in range(10)]}
    assert 1024 < len(httpx.Request("POST", "/", json=batch).content) < 2048
    async with (
        make_client(ingest_max_held_bytes=2048, tenant_share=1) as client,
        db.connect() as blocker,
    ):
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        holding = asyncio.create_task(client.post("/v1/events", json=batch))
        await until(lambda: flushes_waiting(database_url), "its flush waiting on the lock")

        refused = await client.post("/v1/events", json={"events": [event() for _ in range(10)]})

        await blocker.rollback()
        assert (await holding).status_code == 200
        accepted_after = await client.post("/v1/events", json={"events": [event()] * 10})

    assert refused.status_code == 503
    assert refused.json()["error"]["message"] == "ingest is overloaded; retry later"
    assert accepted_after.status_code == 200
