"""The Python client against real servers: every recorded event ends accepted, rejected or
undelivered, told to the caller, whatever happens to the server meanwhile; both clients alike."""

import asyncio
import gzip
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import UNLIMITED_ENV, Keys, bearer
from tests.gateways import until
from tests.servers import Server, child_environment, free_port, running_server, start_server
from tokenpulse.client import (
    AsyncClient,
    BufferFull,
    Client,
    ClientClosed,
    Counts,
    Problem,
    Rejected,
    Retries,
    Undelivered,
)

pytestmark = pytest.mark.process

QUICK = Retries(first_delay=0.05, max_delay=0.5)
"""Retries quick enough that a test waits for a restarted server, not for its backoff."""


def server_env(database_url: str, **settings: str) -> dict[str, str]:
    return {
        "TOKENPULSE_DATABASE_URL": database_url,
        **UNLIMITED_ENV,
        **{f"TOKENPULSE_{name.upper()}": value for name, value in settings.items()},
    }


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that do not stop theirs."""
    with running_server(tmp_path_factory.mktemp("client"), env=server_env(database_url)) as server:
        yield server


@pytest.fixture
async def ingest_key(keys: Keys) -> str:
    return await keys.create("ingest")


def usage(count: int, *, prefix: str | None = None) -> list[dict[str, Any]]:
    """`record`'s arguments for `count` valid events with ids of their own."""
    prefix = prefix or uuid.uuid4().hex[:8]
    return [
        {
            "event_id": f"{prefix}-{number}",
            "tenant": f"tenant-{number % 7}",
            "project": "client-test",
            "model": ("pulse-1", "pulse-1-mini")[number % 2],
            "input_tokens": 100 + number,
            "cached_input_tokens": number % 50,
            "output_tokens": 10 + number % 90,
            "reasoning_tokens": number % 10,
        }
        for number in range(count)
    ]


def sums(events: list[dict[str, Any]]) -> dict[str, int]:
    """The measures a server holding exactly `events` counts."""
    measures = (
        "input_tokens",
        "cached_input_tokens",
        "cache_write_input_tokens",
        "output_tokens",
        "reasoning_tokens",
    )
    totals = {name: sum(event.get(name, 0) for event in events) for name in measures}
    return {"requests": len(events), **totals}


async def stored_ids(database_url: str) -> list[str]:
    """Every event id the database holds, as often as it holds it."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT event_id FROM usage_event")
    finally:
        await connection.close()
    return sorted(row["event_id"] for row in rows)


async def totals(server: Server, key: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(key)) as reader:
        answer = await reader.get("/v1/totals", params={"window": "24h"})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    if not results:
        return {}
    return {name: value for name, value in results[0].items() if name in sums([])}


def outcome(counts: Counts) -> tuple[int, int, int, int]:
    """Stored (accepted or duplicate), rejected, undelivered and pending."""
    return counts.accepted + counts.duplicates, counts.rejected, counts.undelivered, counts.pending


@dataclass
class Told:
    """What the callbacks were told."""

    rejected: list[Rejected] = field(default_factory=list)
    undelivered: list[Undelivered] = field(default_factory=list)

    def undelivered_ids(self) -> list[str]:
        return sorted(event["event_id"] for failure in self.undelivered for event in failure.events)


def dead_url() -> str:
    """A URL where nothing listens: every request fails to connect."""
    return f"http://127.0.0.1:{free_port()}"


# -- a server killed mid-stream ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["Client", "AsyncClient"])
async def test_a_server_killed_and_restarted_mid_stream_loses_no_event_and_doubles_none(
    kind: str,
    keys: Keys,
    ingest_key: str,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = server_env(database_url)
    server = await asyncio.to_thread(start_server, tmp_path, env=env)
    told = Told()
    try:
        async with Sender(kind, server.url, ingest_key, told) as sender:
            first, second, third = (usage(3_000, prefix=phase) for phase in ("a", "b", "c"))
            await sender.record_from_many(first)
            await until(lambda: sender.counts.accepted >= 1_000, "a third of the events acked")
            # Killed with requests on their way and events waiting for their batch.
            server.process.kill()
            server.process.wait()
            await sender.record_from_many(second)
            server = await asyncio.to_thread(start_server, tmp_path, env=env, port=server.port)
            await until(lambda: sender.counts.accepted >= 4_000, "some events recorded meanwhile")
            server.process.kill()
            server.process.wait()
            server = await asyncio.to_thread(start_server, tmp_path, env=env, port=server.port)
            await sender.record_from_many(third)
            counts = await sender.close()
        recorded = first + second + third
        assert "events again" in caplog.text, "no request of the client ever went unanswered"
        assert outcome(counts) == (9_000, 0, 0, 0)
        assert told == Told()
        assert await stored_ids(database_url) == sorted(event["event_id"] for event in recorded)
        assert await totals(server, keys.admin) == sums(recorded)
    finally:
        server.stop()


class Sender:
    """Either client behind one face, for tests that hold for both."""

    def __init__(self, kind: str, url: str, key: str, told: Told, **options: Any) -> None:
        self.kind = kind
        arguments: dict[str, Any] = {
            "batch_size": 200,
            "max_wait": 0.05,
            "retries": QUICK,
            "on_rejected": told.rejected.append,
            "on_undelivered": told.undelivered.append,
            **options,
        }
        self.threaded = Client(url, key, **arguments) if kind == "Client" else None
        self.asynchronous = AsyncClient(url, key, **arguments) if kind == "AsyncClient" else None

    @property
    def counts(self) -> Counts:
        client = self.threaded or self.asynchronous
        assert client is not None
        return client.counts

    async def record(self, event: dict[str, Any]) -> str:
        if self.threaded is not None:
            return self.threaded.record(**event)
        assert self.asynchronous is not None
        return await self.asynchronous.record(**event)

    def record_blocking(self, event: dict[str, Any]) -> str:
        assert self.threaded is not None
        return self.threaded.record(**event)

    async def record_from_many(self, events: list[dict[str, Any]], senders: int = 8) -> None:
        """`events` recorded from `senders` threads (or tasks) at once."""
        shares = [events[number::senders] for number in range(senders)]
        if self.threaded is not None:
            client = self.threaded

            def record(share: list[dict[str, Any]]) -> None:
                for event in share:
                    client.record(**event)

            threads = [threading.Thread(target=record, args=(share,)) for share in shares]
            for thread in threads:
                thread.start()
            await asyncio.gather(*(asyncio.to_thread(thread.join) for thread in threads))
        else:

            async def record_async(share: list[dict[str, Any]]) -> None:
                for event in share:
                    await self.record(event)
                    await asyncio.sleep(0)

            await asyncio.gather(*(record_async(share) for share in shares))

    async def flush(self) -> Counts:
        if self.threaded is not None:
            return await asyncio.to_thread(self.threaded.flush)
        assert self.asynchronous is not None
        return await self.asynchronous.flush()

    async def close(self, give_up_after: float | None = None) -> Counts:
        if self.threaded is not None:
            return await asyncio.to_thread(self.threaded.close, give_up_after)
        assert self.asynchronous is not None
        return await self.asynchronous.close(give_up_after)

    async def __aenter__(self) -> "Sender":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


KINDS = pytest.mark.parametrize("kind", ["Client", "AsyncClient"])


# -- a full buffer ---------------------------------------------------------------------


@KINDS
async def test_on_a_full_buffer_record_raises_at_once_when_told_to_and_close_gives_up_loudly(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    told = Told()
    sender = Sender(
        kind, dead_url(), "tp_none", told, batch_size=10, max_buffered_events=10, when_full="raise"
    )
    events = usage(11)
    for event in events[:10]:
        await sender.record(event)

    with pytest.raises(BufferFull, match="holds 10 unanswered events"):
        await sender.record(events[10])
    counts = await sender.close(give_up_after=0)

    assert counts.recorded == 10
    assert outcome(counts) == (0, 0, 10, 0)
    assert told.undelivered_ids() == sorted(event["event_id"] for event in events[:10])
    assert [failure.status for failure in told.undelivered] == [None]
    assert "10 events were not delivered" in caplog.text


@KINDS
async def test_on_a_full_buffer_record_blocks_for_its_timeout_and_then_raises(kind: str) -> None:
    sender = Sender(
        kind, dead_url(), "tp_none", Told(), batch_size=5, max_buffered_events=5, block_timeout=0.3
    )
    events = usage(6)
    for event in events[:5]:
        await sender.record(event)

    started = time.monotonic()
    with pytest.raises(BufferFull, match=r"none was answered for within 0\.3 s"):
        await sender.record(events[5])
    waited = time.monotonic() - started
    await sender.close(give_up_after=0)

    assert waited >= 0.3
    assert sender.counts.recorded == 5


@KINDS
async def test_a_record_blocked_on_a_full_buffer_goes_on_once_the_server_is_back(
    kind: str, keys: Keys, ingest_key: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    told = Told()
    sender = Sender(
        kind,
        f"http://127.0.0.1:{port}",
        ingest_key,
        told,
        batch_size=5,
        max_buffered_events=5,
        block_timeout=60,
    )
    events = usage(6)
    for event in events[:5]:
        await sender.record(event)
    starting = asyncio.create_task(
        asyncio.to_thread(start_server, tmp_path, env=server_env(database_url), port=port)
    )
    if kind == "Client":
        # The blocked record waits in a thread of its own, as a gateway's request would.
        await asyncio.to_thread(sender.record_blocking, events[5])
    else:
        await sender.record(events[5])
    counts = await sender.close()
    server = await starting
    try:
        assert outcome(counts) == (6, 0, 0, 0)
        assert await stored_ids(database_url) == sorted(event["event_id"] for event in events)
        assert await totals(server, keys.admin) == sums(events)
    finally:
        server.stop()


# -- flush, close and the exit ---------------------------------------------------------


@KINDS
async def test_close_sends_what_waits_for_its_batch_and_the_client_records_no_more(
    kind: str, server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    # Neither full nor old enough to go by itself before the close.
    sender = Sender(kind, server.url, ingest_key, Told(), batch_size=1000, max_wait=3600)
    events = usage(10)
    for event in events:
        await sender.record(event)
    assert outcome(sender.counts) == (0, 0, 0, 10)

    counts = await sender.close()

    assert outcome(counts) == (10, 0, 0, 0)
    assert await stored_ids(database_url) == sorted(event["event_id"] for event in events)
    with pytest.raises(ClientClosed):
        await sender.record(usage(1)[0])
    assert await sender.close() == counts


@KINDS
async def test_flush_returns_once_the_server_has_answered_for_every_event_recorded(
    kind: str, server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    async with Sender(kind, server.url, ingest_key, Told(), max_wait=3600) as sender:
        events = usage(450)
        for event in events:
            await sender.record(event)

        counts = await sender.flush()

        assert outcome(counts) == (450, 0, 0, 0)
        assert await totals(server, keys.admin) == sums(events)


EXITING_SCRIPT = """
import asyncio, sys
from tokenpulse.client import AsyncClient, Client

url, key, kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
events = [
    dict(model="pulse-1", input_tokens=n, output_tokens=1, tenant="exit", event_id=f"exit-{n}")
    for n in range(count)
]
if kind == "Client":
    client = Client(url, key)
    for event in events:
        client.record(**event)
else:
    async def main():
        client = AsyncClient(url, key)
        for event in events:
            await client.record(**event)
    asyncio.run(main())
print("recorded; exiting without close()")
"""


@KINDS
async def test_a_client_left_open_sends_its_events_when_the_interpreter_exits(
    kind: str, server: Server, keys: Keys, ingest_key: str, database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "exits.py"
    script.write_text(EXITING_SCRIPT)
    # 2,500 events: two batches on their way when the recording ends, the rest waiting.
    count = 2_500

    exited = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), server.url, ingest_key, kind, str(count)],
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert exited.returncode == 0, exited.stderr
    assert "recorded; exiting" in exited.stdout
    assert "not delivered" not in exited.stderr
    assert await stored_ids(database_url) == sorted(f"exit-{n}" for n in range(count))
    assert (await totals(server, keys.admin))["input_tokens"] == sum(range(count))


# -- what the server refuses -----------------------------------------------------------


@KINDS
async def test_rejected_events_reach_the_callback_with_the_servers_problems_and_the_log(
    kind: str,
    server: Server,
    keys: Keys,
    ingest_key: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    told = Told()
    valid = usage(4)
    broken = [
        {**usage(1)[0], "input_tokens": -1},
        {**usage(1)[0], "cached_input_tokens": 10**6},
        {**usage(1)[0], "occurred_at": datetime.now(UTC) - timedelta(days=400)},
    ]
    with caplog.at_level(logging.WARNING, logger="tokenpulse.client"):
        async with Sender(kind, server.url, ingest_key, told, max_wait=3600) as sender:
            for event in [valid[0], broken[0], valid[1], broken[1], valid[2], broken[2], valid[3]]:
                await sender.record(event)
            counts = await sender.flush()

    assert outcome(counts) == (4, 3, 0, 0)
    assert [rejection.event["event_id"] for rejection in told.rejected] == [
        event["event_id"] for event in broken
    ]
    assert [[p.field for p in rejection.problems] for rejection in told.rejected] == [
        ["input_tokens"],
        ["cached_input_tokens"],
        ["occurred_at"],
    ]
    assert told.rejected[0].problems == (Problem("input_tokens", "must be at least 0, got -1"),)
    assert told.rejected[0].event["input_tokens"] == -1
    assert f"event {broken[0]['event_id']} was rejected: input_tokens must be at least 0" in (
        caplog.text
    )
    assert await stored_ids(database_url) == sorted(event["event_id"] for event in valid)


@KINDS
async def test_every_rejected_event_of_a_batch_is_named_even_past_what_one_answer_lists(
    kind: str, server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    told = Told()
    # The server's answer names at most 100 rejected events; the client has the rest named.
    broken = [{**event, "output_tokens": -1} for event in usage(250, prefix="bad")]
    valid = usage(50, prefix="good")
    async with Sender(kind, server.url, ingest_key, told, batch_size=300) as sender:
        for event in broken[:150] + valid + broken[150:]:
            await sender.record(event)
        counts = await sender.flush()
        all_bad = [{**event, "event_id": f"worse-{n}"} for n, event in enumerate(broken[:120])]
        for event in all_bad:
            await sender.record(event)
        # Every event of this batch is rejected: a 422.
        after = await sender.flush()

    assert outcome(counts) == (50, 250, 0, 0)
    assert outcome(after) == (50, 370, 0, 0)
    assert sorted(rejection.event["event_id"] for rejection in told.rejected) == sorted(
        event["event_id"] for event in broken + all_bad
    )
    assert all(
        rejection.problems == (Problem("output_tokens", "must be at least 0, got -1"),)
        for rejection in told.rejected
    )
    assert await stored_ids(database_url) == sorted(event["event_id"] for event in valid)


@pytest.fixture(scope="module")
def small_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that takes at most 50 events and 4 KiB a request."""
    env = server_env(database_url, max_events_per_request="50", max_body_bytes="4096")
    with running_server(tmp_path_factory.mktemp("small"), env=env) as server:
        yield server


@KINDS
async def test_a_batch_too_large_for_the_server_is_cut_until_each_part_fits_or_is_one_event(
    kind: str, small_server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    told = Told()
    events = usage(300)
    # Sixteen attributes at their longest: more than 4 KiB on its own.
    huge = {
        **usage(1, prefix="huge")[0],
        "attributes": {f"{key:064d}": "v" * 256 for key in range(16)},
    }
    async with Sender(kind, small_server.url, ingest_key, told, batch_size=400) as sender:
        for event in [*events[:150], huge, *events[150:]]:
            await sender.record(event)
        counts = await sender.flush()

    assert outcome(counts) == (300, 1, 0, 0)
    assert [rejection.event["event_id"] for rejection in told.rejected] == [huge["event_id"]]
    assert told.rejected[0].problems[0].field is None
    assert "4,096" in told.rejected[0].problems[0].message
    assert await stored_ids(database_url) == sorted(event["event_id"] for event in events)
    assert await totals(small_server, keys.admin) == sums(events)


@KINDS
@pytest.mark.parametrize(("scope", "status"), [(None, 401), ("read", 403)])
async def test_a_key_the_server_refuses_makes_the_events_undelivered_loudly_with_the_status(
    kind: str,
    scope: str | None,
    status: int,
    server: Server,
    keys: Keys,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "tp_0123456789abcdef_unknown" if scope is None else await keys.create(scope)
    told = Told()
    events = usage(30)
    async with Sender(kind, server.url, key, told, batch_size=20) as sender:
        for event in events:
            await sender.record(event)
        counts = await sender.flush()

    assert outcome(counts) == (0, 0, 30, 0)
    assert told.undelivered_ids() == sorted(event["event_id"] for event in events)
    assert {failure.status for failure in told.undelivered} == {status}
    assert all(f"/v1/events answered {status}" in failure.reason for failure in told.undelivered)
    assert [r.levelno for r in caplog.records if "not delivered" in r.message] == [
        logging.ERROR
    ] * len(told.undelivered)
    assert await stored_ids(database_url) == []


@KINDS
async def test_events_no_server_answers_for_are_undelivered_once_retries_give_up(
    kind: str,
) -> None:
    told = Told()
    retries = Retries(first_delay=0.05, max_delay=0.1, give_up_after=0.5)
    events = usage(7)
    async with Sender(kind, dead_url(), "tp_none", told, retries=retries) as sender:
        for event in events:
            await sender.record(event)
        counts = await sender.flush()

    assert outcome(counts) == (0, 0, 7, 0)
    assert told.undelivered_ids() == sorted(event["event_id"] for event in events)
    assert told.undelivered[0].status is None
    assert told.undelivered[0].reason.startswith(
        "not answered for within 0.5 s; the last attempt: ConnectError"
    )


@KINDS
async def test_flush_returns_once_the_callbacks_for_its_events_have_been_told(
    kind: str, server: Server, keys: Keys, ingest_key: str
) -> None:
    told = Told()

    def slowly(rejection: Rejected) -> None:
        time.sleep(0.2)
        told.rejected.append(rejection)

    async with Sender(kind, server.url, ingest_key, Told(), on_rejected=slowly) as sender:
        rejected = await sender.record({**usage(1)[0], "input_tokens": -1})
        await sender.flush()

        assert [rejection.event["event_id"] for rejection in told.rejected] == [rejected]


@KINDS
async def test_a_callback_that_raises_is_logged_and_the_client_goes_on(
    kind: str, server: Server, keys: Keys, ingest_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fails(rejection: Rejected) -> None:
        raise RuntimeError("the caller's own bug")

    async with Sender(kind, server.url, ingest_key, Told(), on_rejected=fails) as sender:
        await sender.record({**usage(1)[0], "input_tokens": -1})
        first = await sender.flush()
        await sender.record(usage(1)[0])
        second = await sender.flush()

    assert outcome(first) == (0, 1, 0, 0)
    assert outcome(second) == (1, 1, 0, 0)
    assert "on_rejected raised" in caplog.text
    assert "the caller's own bug" in caplog.text


# -- Retry-After -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rate_limited_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server that takes 100 events a second from each key, after a burst of 200."""
    env = server_env(database_url, rate_limit_ingest_events="100", max_events_per_request="100")
    with running_server(tmp_path_factory.mktemp("limited"), env=env) as server:
        yield server


@dataclass
class Exchange:
    sent: float
    answered: float
    status: int
    retry_after: float | None


@dataclass
class Watch:
    """When each request went, its body, and when and how it was answered."""

    exchanges: list[Exchange] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def note(self, request: httpx.Request, sent: float, answer: httpx.Response) -> None:
        self.bodies.append(gzip.decompress(request.content))
        retry_after = answer.headers.get("Retry-After")
        self.exchanges.append(
            Exchange(
                sent,
                time.monotonic(),
                answer.status_code,
                float(retry_after) if retry_after is not None else None,
            )
        )

    def waits_after_429(self) -> list[tuple[float, float]]:
        """For each 429, (its Retry-After, how long until the next request went)."""
        return [
            (before.retry_after or 0.0, after.sent - before.answered)
            for before, after in zip(self.exchanges, self.exchanges[1:], strict=False)
            if before.status == 429
        ]

    def events_sent(self) -> list[dict[str, Any]]:
        return [event for body in self.bodies for event in json.loads(body)["events"]]

    def transport(self, kind: str) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
        """httpx's own transport for `kind` of client, watched."""
        return WatchedTransport(self) if kind == "Client" else AsyncWatchedTransport(self)


class WatchedTransport(httpx.HTTPTransport):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self._watch = watch

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        answer = super().handle_request(request)
        self._watch.note(request, sent, answer)
        return answer


class AsyncWatchedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, watch: Watch) -> None:
        super().__init__()
        self._watch = watch

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        answer = await super().handle_async_request(request)
        self._watch.note(request, sent, answer)
        return answer


@KINDS
async def test_after_a_429_the_same_events_go_again_no_sooner_than_retry_after_says(
    kind: str, rate_limited_server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    watch = Watch()
    events = usage(500)
    # One request at a time, so that the request after a 429 is the same request again.
    async with Sender(
        kind,
        rate_limited_server.url,
        ingest_key,
        Told(),
        batch_size=100,
        concurrency=1,
        max_wait=3600,
        transport=watch.transport(kind),
    ) as sender:
        for event in events:
            await sender.record(event)
        counts = await sender.flush()

    waits = watch.waits_after_429()
    assert waits, "the rate limit was never reached"
    assert all(retry_after >= 1 for retry_after, _ in waits)
    assert all(waited >= retry_after for retry_after, waited in waits), waits
    assert outcome(counts) == (500, 0, 0, 0)
    assert await stored_ids(database_url) == sorted(event["event_id"] for event in events)
    assert await totals(rate_limited_server, keys.admin) == sums(events)


# -- the events as sent ----------------------------------------------------------------


@KINDS
async def test_an_event_gets_a_time_ordered_id_and_now_as_its_instant_unless_given(
    kind: str, server: Server, keys: Keys, ingest_key: str, database_url: str
) -> None:
    before = datetime.now(UTC)
    async with Sender(kind, server.url, ingest_key, Told()) as sender:
        first = await sender.record(
            {"model": "m", "input_tokens": 1, "output_tokens": 1, "tenant": "acme"}
        )
        await asyncio.sleep(0.002)
        second = await sender.record(
            {"model": "m", "input_tokens": 1, "output_tokens": 1, "tenant": "acme"}
        )
        await sender.flush()
    after = datetime.now(UTC)

    ids = [uuid.UUID(first), uuid.UUID(second)]
    assert [(i.version, i.variant) for i in ids] == [(7, uuid.RFC_4122)] * 2
    assert first < second
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch("SELECT event_id, occurred_at FROM usage_event")
    finally:
        await connection.close()
    assert sorted(row["event_id"] for row in rows) == [first, second]
    assert all(before <= row["occurred_at"] <= after for row in rows)


@KINDS
async def test_cache_writes_are_sent_only_when_there_are_some(
    kind: str, server: Server, keys: Keys, ingest_key: str
) -> None:
    watch = Watch()
    async with Sender(
        kind, server.url, ingest_key, Told(), transport=watch.transport(kind)
    ) as sender:
        await sender.record({**usage(1)[0], "cache_write_input_tokens": 0})
        await sender.record({**usage(1)[0], "input_tokens": 900, "cache_write_input_tokens": 700})
        counts = await sender.flush()

    assert ["cache_write_input_tokens" in event for event in watch.events_sent()] == [False, True]
    assert outcome(counts) == (2, 0, 0, 0)
    assert (await totals(server, keys.admin))["cache_write_input_tokens"] == 700


@KINDS
async def test_what_no_json_can_carry_is_refused_by_record_itself(kind: str) -> None:
    sender = Sender(kind, dead_url(), "tp_none", Told())
    event = usage(1)[0]

    with pytest.raises(ValueError, match="occurred_at must carry a time zone"):
        await sender.record({**event, "occurred_at": datetime(2026, 11, 27, 9, 0)})
    with pytest.raises(ValueError, match="Out of range float"):
        await sender.record({**event, "attributes": {"ratio": float("nan")}})
    with pytest.raises(TypeError, match="not JSON serializable"):
        await sender.record({**event, "attributes": {"at": object()}})
    counts = await sender.close()

    assert counts == Counts(recorded=0, accepted=0, duplicates=0, rejected=0, undelivered=0)
