"""One tenant's hostile or heavy ingest cannot take the service away from another: bodies are
counted before they are decoded, stalled uploads are dropped, every tenant has a share of a
worker's queue and byte budget and a rate in events, and answers stay small."""

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ClientFactory, Keys, Ticker, bearer
from tests.factories import event
from tests.faults import flushes_waiting, holds
from tests.gateways import until

JSON = "application/json"
NDJSON = "application/x-ndjson"

Attack = Callable[[], Coroutine[Any, Any, httpx.Response]]


async def victim_latencies(
    client: httpx.AsyncClient, token: str, attack: Attack
) -> tuple[httpx.Response, list[float]]:
    """The attack's answer, and how long each of another tenant's posts took meanwhile."""
    latencies: list[float] = []
    attacking = asyncio.create_task(attack())
    while not attacking.done() or not latencies:
        started = time.perf_counter()
        answer = await client.post(
            "/v1/events", json={"events": [event(tenant="victim")]}, headers=bearer(token)
        )
        assert answer.status_code == 200, answer.text
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return await attacking, latencies


BODIES = {
    # 10,225 bytes of gzip, 10 MiB of `1` lines: each line a valid JSON value, not an event.
    "gzip-of-five-million-lines": (gzip.compress(b"1\n" * 5_000_000, 9), NDJSON, "gzip"),
    "five-million-lines-that-are-not-json": (b"x\n" * 5_000_000, NDJSON, None),
    "three-million-empty-objects": (
        b'{"events": [' + b",".join([b"{}"] * 3_000_000) + b"]}",
        JSON,
        None,
    ),
}


@pytest.mark.parametrize(("body", "content_type", "encoding"), BODIES.values(), ids=list(BODIES))
async def test_a_body_of_millions_of_tiny_events_is_refused_while_another_tenant_is_served(
    make_client: ClientFactory,
    keys: Keys,
    body: bytes,
    content_type: str,
    encoding: str | None,
) -> None:
    hostile = await keys.create("ingest", tenant="hostile")
    victim = await keys.create("ingest", tenant="victim")
    headers = {"content-type": content_type, **bearer(hostile)}
    if encoding:
        headers["content-encoding"] = encoding

    async with make_client() as client:
        refused, latencies = await victim_latencies(
            client,
            victim,
            lambda: client.post("/v1/events", content=body, headers=headers, timeout=60),
        )
        totals = await client.get("/v1/totals", params={"window": "1h", "tenant": "hostile"})

    # Refused at the 10,001st event, without decoding the rest: the victim never waits long.
    assert max(latencies) < 1, latencies
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["message"] == (
        "the body holds more than 10,000 events; at most 10,000 are accepted at once"
    )
    assert totals.json()["results"] == []


async def test_an_event_with_millions_of_values_is_refused_before_it_is_decoded(
    client: httpx.AsyncClient,
) -> None:
    inner = b"[" + b",".join([b"1"] * 3_000_000) + b"]"
    single = json.dumps(event()).encode()[:-1] + b', "attributes": ' + inner + b"}"
    in_a_batch = b'{"events": [' + json.dumps(event()).encode() + b"," + single + b"]}"

    answers = [
        await client.post("/v1/events", content=body, headers={"content-type": JSON})
        for body in (single, b"[" * 100_000 + b"]" * 100_000, in_a_batch)
    ]
    line = await client.post(
        "/v1/events",
        content=json.dumps(event()).encode() + b"\n" + single,
        headers={"content-type": NDJSON},
    )

    assert [answer.status_code for answer in answers] == [413, 413, 413]
    assert [answer.json()["error"]["message"] for answer in answers] == [
        "the body has more than 8,192 JSON values; no event has as many",
        "the body has more than 8,192 JSON values; no event has as many",
        "event 1 has more than 8,192 JSON values; no event has as many",
    ]
    # A line is rejected on its own, like any bad event; the good line beside it is stored.
    assert line.status_code == 200
    assert line.json()["accepted"] == 1
    assert line.json()["errors"] == [
        {
            "index": 1,
            "event_id": None,
            "errors": [
                {
                    "field": None,
                    "message": "the line has more than 8,192 JSON values; no event has as many",
                }
            ],
        }
    ]


BATCHES_WITH_MORE_AFTER_THEM = {
    "events-twice": b'{"events": [], "events": [' + b",".join([b"1"] * 3_000_000) + b"]}",
    "another-member": b'{"events": [1], "x": [' + b",".join([b"1"] * 3_000_000) + b"]}",
}


@pytest.mark.parametrize(
    "body", BATCHES_WITH_MORE_AFTER_THEM.values(), ids=list(BATCHES_WITH_MORE_AFTER_THEM)
)
async def test_what_follows_a_batchs_events_is_counted_too(
    make_client: ClientFactory, keys: Keys, body: bytes
) -> None:
    hostile = await keys.create("ingest", tenant="hostile")
    victim = await keys.create("ingest", tenant="victim")
    headers = {"content-type": JSON, **bearer(hostile)}
    async with make_client() as client:
        refused, latencies = await victim_latencies(
            client,
            victim,
            lambda: client.post("/v1/events", content=body, headers=headers, timeout=60),
        )

    assert max(latencies) < 1, latencies
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["message"] == (
        'what follows "events" in the body has more than 8,192 JSON values; no event has as many'
    )


async def stalled_upload(first: bytes, read: asyncio.Event) -> AsyncIterator[bytes]:
    """A body that sends its first bytes and then nothing more, for ever; `read` is set once
    the server has read them and asks for more."""
    yield first
    read.set()
    await asyncio.Event().wait()
    yield b""  # pragma: no cover: never reached


async def test_stalled_uploads_are_dropped_and_never_take_another_tenants_room(
    make_client: ClientFactory, keys: Keys
) -> None:
    hostile = await keys.create("ingest", tenant="hostile")
    victim = await keys.create("ingest", tenant="victim")
    # Eight of these fill the worker's 2 MiB to the byte.
    first = b'{"events": [' + b" " * (256 * 1024 - 12)
    async with make_client(
        ingest_max_held_bytes=2 * 1024 * 1024, body_idle_timeout=1, body_timeout=30
    ) as client:
        read = [asyncio.Event() for _ in range(12)]
        stalled = [
            asyncio.create_task(
                client.post(
                    "/v1/events",
                    content=stalled_upload(first, was_read),
                    headers={"content-type": JSON, **bearer(hostile)},
                    timeout=30,
                )
            )
            for was_read in read
        ]
        await until(
            lambda: all(r.is_set() or t.done() for r, t in zip(read, stalled, strict=True)),
            "every upload stalled after its first bytes, or refused",
        )
        victims = [
            await client.post(
                "/v1/events", json={"events": [event(tenant="victim")]}, headers=bearer(victim)
            )
            for _ in range(20)
        ]
        assert [answer.status_code for answer in victims] == [200] * 20
        hostile_answers = await asyncio.wait_for(asyncio.gather(*stalled), 10)

    statuses = sorted(answer.status_code for answer in hostile_answers)
    # Past its share of the bytes (a quarter: 512 KiB, two uploads) the tenant is refused; the
    # uploads it did start are dropped once they have sent nothing for a second.
    assert statuses == [408] * 2 + [429] * 10, statuses
    timed_out = next(answer for answer in hostile_answers if answer.status_code == 408)
    assert timed_out.json()["error"] == {
        "code": "request_timeout",
        "message": "no part of the body arrived for 1 s",
    }
    assert timed_out.headers["connection"] == "close"


async def trickle(
    chunks: int, pause: float, sent: list[int], clock: Ticker
) -> AsyncIterator[bytes]:
    """A body whose chunks each come `pause` seconds, by `clock`, after the last."""
    yield b'{"events": ['
    for _ in range(chunks):
        clock.advance(pause)
        sent[0] += 1
        yield b" "


async def test_a_body_that_trickles_in_is_cut_off_at_the_body_timeout(
    make_client: ClientFactory, monotonic: Ticker
) -> None:
    sent = [0]
    async with make_client(body_idle_timeout=1, body_timeout=2) as client:
        answer = await client.post(
            "/v1/events",
            content=trickle(100, 0.125, sent, monotonic),
            headers={"content-type": JSON},
            timeout=30,
        )

    assert answer.status_code == 408
    assert answer.json()["error"]["message"] == "the body did not arrive within 2 s"
    # Cut off at 2 s, with the sixteenth of the hundred chunks it would have sent.
    assert sent[0] == 16, sent


async def empty_gzip_members(count: int, sent: list[int]) -> AsyncIterator[bytes]:
    member = gzip.compress(b"")
    for _ in range(count):
        sent[0] += len(member) * 64
        yield member * 64


async def test_received_gzip_bytes_count_towards_the_body_limit(
    make_client: ClientFactory,
) -> None:
    sent = [0]
    async with make_client(max_body_bytes=1024 * 1024) as client:
        answer = await client.post(
            "/v1/events",
            # 20 MiB on the wire, inflating to nothing at all.
            content=empty_gzip_members(16_384, sent),
            headers={"content-type": NDJSON, "content-encoding": "gzip"},
        )

    assert answer.status_code == 413
    assert answer.json()["error"]["message"] == (
        "the body is larger than the limit of 1,048,576 bytes"
    )
    # Refused as soon as the bytes received passed the limit, not once they had all arrived.
    assert sent[0] < 2 * 1024 * 1024


async def test_a_tenant_sending_more_events_than_its_rate_is_refused_and_others_are_not(
    make_client: ClientFactory, keys: Keys
) -> None:
    heavy = await keys.create("ingest", tenant="heavy")
    victim = await keys.create("ingest", tenant="victim")
    batch = {"events": [event(tenant="heavy", event_id="same") for _ in range(1000)]}
    async with make_client(
        rate_limit_ingest_events=1000, rate_limit_burst_seconds=2, max_events_per_request=1000
    ) as client:
        # Duplicates cost as much as new events: the same batch again and again.
        heavy_answers = [
            await client.post("/v1/events", json=batch, headers=bearer(heavy)) for _ in range(4)
        ]
        victim_answers = [
            await client.post(
                "/v1/events", json={"events": [event(tenant="victim")]}, headers=bearer(victim)
            )
            for _ in range(3)
        ]

    assert [answer.status_code for answer in heavy_answers] == [200, 200, 429, 429]
    refused = heavy_answers[2]
    assert refused.json()["error"] == {
        "code": "rate_limited",
        "message": "this tenant sends more than its limit of 1,000 events a second",
    }
    assert int(refused.headers["retry-after"]) >= 1
    assert [answer.status_code for answer in victim_answers] == [200, 200, 200]


async def test_an_answer_lists_at_most_a_hundred_rejections_and_counts_the_rest(
    client: httpx.AsyncClient,
) -> None:
    body = json.dumps({"events": [{}] * 10_000}).encode()

    answer = await client.post("/v1/events", content=body, headers={"content-type": JSON})

    assert answer.status_code == 422
    document = answer.json()
    assert document["rejected"] == 10_000
    assert [rejection["index"] for rejection in document["errors"]] == list(range(100))
    assert document["errors_omitted"] == 9_900
    # The 60 KB body is answered in far fewer bytes than a 3 MB list of every reason.
    assert len(answer.content) < 100_000


async def test_a_flood_queues_behind_itself_and_not_in_front_of_another_tenant(
    make_client: ClientFactory, keys: Keys, db: AsyncEngine, database_url: str
) -> None:
    heavy = await keys.create("ingest", tenant="heavy")
    victim = await keys.create("ingest", tenant="victim")
    answered: list[str] = []

    async def post(token: str, tenant: str, events: int) -> httpx.Response:
        body = {"events": [event(tenant=tenant) for _ in range(events)]}
        answer = await client.post("/v1/events", json=body, headers=bearer(token), timeout=30)
        answered.append(tenant)
        return answer

    async with (
        make_client(batch_max_events=10, batch_max_concurrent_flushes=1) as client,
        db.connect() as blocker,
    ):
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        flood = [asyncio.create_task(post(heavy, "heavy", 10))]
        await until(lambda: flushes_waiting(database_url), "the flood's first flush waiting")
        flood += [asyncio.create_task(post(heavy, "heavy", 10)) for _ in range(19)]
        await until(lambda: holds(client, 200), "the flood queued")
        victims = asyncio.create_task(post(victim, "victim", 1))
        await until(lambda: holds(client, 201), "the victim's event queued behind the flood")
        await blocker.rollback()
        answers = [*await asyncio.gather(*flood), await victims]

    assert [answer.status_code for answer in answers] == [200] * 21
    # One turn of the flood's (the flush that was waiting, and the one already owed to it),
    # then the victim's: not behind the nineteen batches the flood had queued.
    assert answered.index("victim") <= 2, answered


async def test_a_large_request_is_not_passed_over_by_smaller_ones_that_keep_coming(
    make_client: ClientFactory, keys: Keys, db: AsyncEngine, database_url: str
) -> None:
    answered: list[str] = []

    async def post(tenant: str, events: int) -> httpx.Response:
        token = await keys.create("ingest", tenant=tenant)
        body = {"events": [event(tenant=tenant) for _ in range(events)]}
        answer = await client.post("/v1/events", json=body, headers=bearer(token), timeout=30)
        answered.append(tenant)
        return answer

    async with (
        make_client(batch_max_events=10, batch_max_concurrent_flushes=1) as client,
        db.connect() as blocker,
    ):
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        posts = [asyncio.create_task(post("first", 1))]
        await until(lambda: flushes_waiting(database_url), "the first flush waiting")
        # In this order: five small requests, then the large one.
        for n in range(5):
            posts.append(asyncio.create_task(post(f"small-{n}", 1)))
            await until(partial(holds, client, 2 + n), f"small-{n} queued")
        posts.append(asyncio.create_task(post("large", 10)))
        await until(lambda: holds(client, 16), "the large request queued")
        for n in range(5, 10):
            posts.append(asyncio.create_task(post(f"small-{n}", 1)))
        await until(lambda: holds(client, 21), "the later small requests queued")
        await blocker.rollback()
        answers = await asyncio.gather(*posts)

    assert [answer.status_code for answer in answers] == [200] * 12
    # The large request does not fit beside the five small ones before it, so it leads the
    # next flush instead of being passed over by every small one after it.
    later = [answered.index(f"small-{n}") for n in range(5, 10)]
    assert answered.index("large") < min(later), answered


async def test_a_tenant_past_its_share_of_the_queue_is_refused_and_others_are_not(
    make_client: ClientFactory, keys: Keys, db: AsyncEngine, database_url: str
) -> None:
    heavy = await keys.create("ingest", tenant="heavy")
    victim = await keys.create("ingest", tenant="victim")

    def batch(tenant: str) -> dict[str, Any]:
        return {"events": [event(tenant=tenant) for _ in range(10)]}

    async with (
        make_client(
            queue_max_events=100,
            tenant_share=0.25,
            max_events_per_request=10,
            batch_max_events=10,
            batch_max_concurrent_flushes=1,
        ) as client,
        db.connect() as blocker,
    ):
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        held = [
            asyncio.create_task(
                client.post("/v1/events", json=batch("heavy"), headers=bearer(heavy))
            )
        ]
        await until(lambda: flushes_waiting(database_url), "the first flush waiting")
        held.append(
            asyncio.create_task(
                client.post("/v1/events", json=batch("heavy"), headers=bearer(heavy))
            )
        )
        await until(lambda: holds(client, 20), "a second batch queued")
        refused = await client.post("/v1/events", json=batch("heavy"), headers=bearer(heavy))
        welcome = asyncio.create_task(
            client.post("/v1/events", json=batch("victim"), headers=bearer(victim))
        )
        await until(lambda: holds(client, 30), "the victim's batch queued")
        await blocker.rollback()
        answers = [*await asyncio.gather(*held), await welcome]

    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == (
        "this tenant has more events waiting than its share of this worker; retry later"
    )
    assert [answer.status_code for answer in answers] == [200, 200, 200]


async def test_a_key_or_launch_body_that_stalls_is_cut_off_too(make_client: ClientFactory) -> None:
    async with make_client(body_idle_timeout=1, body_timeout=30) as client:
        answers = [
            await client.post(
                "/v1/keys",
                content=stalled_upload(b'{"scope": "read"', asyncio.Event()),
                headers={"content-type": JSON},
            ),
            await client.put(
                "/v1/launches/m-large",
                content=stalled_upload(b'{"launched_at": ', asyncio.Event()),
                headers={"content-type": JSON},
            ),
        ]
        created = (await client.get("/v1/keys")).json()

    assert [answer.status_code for answer in answers] == [408, 408]
    assert {answer.json()["error"]["message"] for answer in answers} == {
        "no part of the body arrived for 1 s"
    }
    assert [key["name"] for key in created["keys"]] == ["test admin"]
