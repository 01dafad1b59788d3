"""Gateways that send a seeded day of usage while faults strike, sending each batch again with
the same event ids until it is answered; and the ledger check of what they were acknowledged."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tokenpulse.instants import floor_to
from tokenpulse.simulator.check import check_server
from tokenpulse.simulator.launchday import MINUTE, LaunchDay
from tokenpulse.simulator.ledger import Ledger
from tokenpulse.simulator.retries import Traffic
from tokenpulse.simulator.sender import Delivery, deliver

MODELS = ("pulse-1", "pulse-1-mini")
THRESHOLDS = (10**6, 10**8)
"""Milestones the ledger check compares as well: the crossings move if any event is lost."""
HANG_SECONDS = 60.0
"""How long anything may take before it counts as hanging: a bound that only a hang reaches."""
ANSWER_TIMEOUT_SECONDS = 30.0
"""How long a gateway waits for one answer; a longer ingest timeout makes a stall show here."""

EventKey = tuple[str, str]


@dataclass(frozen=True)
class Load:
    """A day of usage that gateways send while the faults happen."""

    events: int
    seed: int
    batch: int = 250
    concurrency: int = 4

    def day(self) -> LaunchDay:
        """Two hours that are over: the server takes every event, late or not."""
        start = floor_to(datetime.now(UTC) - timedelta(hours=3), MINUTE)
        return LaunchDay(
            start=start,
            seed=self.seed,
            models=MODELS,
            events=self.events,
            duration=timedelta(hours=2),
            tenants=50,
            api_keys=200,
        )


class KeyedLedger(Ledger):
    """The simulator's ledger, which also keeps the key of every event the server answered for."""

    def __init__(self, day: LaunchDay) -> None:
        super().__init__(since=day.start, thresholds=THRESHOLDS)
        self.acked_keys: set[EventKey] = set()

    def record(
        self, batch: int, events: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]
    ) -> None:
        super().record(batch, events, answer)
        rejected = {error["index"] for error in answer.get("errors") or []}
        self.acked_keys.update(
            (event["tenant"], event["event_id"])
            for index, event in enumerate(events)
            if index not in rejected
        )


class WatchedTransport(httpx.AsyncBaseTransport):
    """A transport (httpx's own by default) that counts the status of every answer, and every
    request left without one by the kind of failure."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()
        self.statuses: Counter[int] = Counter()
        self.failures: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self.failures[type(exc).__name__] += 1
            raise
        self.statuses[response.status_code] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Gateways:
    """Clients sending `day` in batches, each batch sent again with the same event ids after a 5xx,
    a 429 or a dropped connection, until the server answers it for good."""

    day: LaunchDay
    ledger: KeyedLedger
    transport: WatchedTransport
    sending: asyncio.Task[None]

    async def progressed(self, share: float) -> bool:
        """Wait until `share` of the day is acknowledged; False if sending ended first."""
        wanted = self.day.events * share
        await until(
            lambda: self.ledger.acked >= wanted or self.sending.done(),
            f"{share:.0%} of the events acknowledged",
        )
        return not self.sending.done()

    def unexpected_answers(self, expected: set[int]) -> list[str]:
        return [
            f"ingest answered {status} {count} times"
            for status, count in sorted(self.transport.statuses.items())
            if status not in expected
        ]

    def unanswered(self, expected: set[str]) -> list[str]:
        """Requests that failed without an answer in a way not `expected` (a timeout: a hang)."""
        return [
            f"{count} requests failed with {kind}"
            for kind, count in sorted(self.transport.failures.items())
            if kind not in expected
        ]


@asynccontextmanager
async def gateways(
    client: httpx.AsyncClient, load: Load, transport: WatchedTransport
) -> AsyncIterator[Gateways]:
    """Start sending a day of usage through `client`; finish sending when the block ends."""
    day = load.day()
    ledger = KeyedLedger(day)
    delivery = Delivery(concurrency=load.concurrency, give_up_seconds=HANG_SECONDS)

    async def batches() -> AsyncIterator[list[dict[str, Any]]]:
        for batch in day.batches(load.batch):
            yield batch

    sending = asyncio.create_task(deliver(client, batches(), ledger, delivery, Traffic()))
    try:
        yield Gateways(day, ledger, transport, sending)
        await sending
    finally:
        sending.cancel()
        await asyncio.wait([sending])


def gateway_client(url: str, key: str, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=ANSWER_TIMEOUT_SECONDS,
        transport=transport,
    )


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; a hang if it does not within HANG_SECONDS."""
    deadline = asyncio.get_running_loop().time() + HANG_SECONDS
    while True:
        holds = condition()
        if holds if isinstance(holds, bool) else await holds:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"waited {HANG_SECONDS:g} s for {what}")
        await asyncio.sleep(0.02)


async def ledger_problems(
    reader: httpx.AsyncClient, database_url: str, day: LaunchDay, ledger: KeyedLedger
) -> list[str]:
    """Where the server disagrees with what it acknowledged: its totals and milestones against
    the ledger, and the events stored against those acknowledged and those sent."""
    checks = await check_server(
        reader,
        ledger,
        project=day.project,
        start=day.start,
        end=day.end,
        thresholds=THRESHOLDS,
        give_up_seconds=HANG_SECONDS,
    )
    problems = [] if checks.totals_problem is None else [checks.totals_problem]
    problems += [
        f"{check.model}: the ledger counts {check.ledger}, the server {check.server}"
        for check in checks.totals
        if not check.matches
    ]
    problems += [
        f"{check.model} {check.threshold:,}: the ledger predicts {check.predicted}, "
        f"the server reports {check.reported}"
        for check in checks.milestones
        if not check.matches
    ]
    stored = await stored_keys(database_url, day.project)
    sent = {(event["tenant"], event["event_id"]) for event in day}
    if lost := ledger.acked_keys - stored:
        problems.append(f"{len(lost):,} acknowledged events are not stored, e.g. {min(lost)}")
    if never_sent := stored - sent:
        problems.append(
            f"{len(never_sent):,} stored events were never sent, e.g. {min(never_sent)}"
        )
    if ledger.rejected:
        problems.append(f"{ledger.rejected:,} events were rejected: {ledger.rejections[:3]}")
    return problems


async def stored_keys(database_url: str, project: str) -> set[EventKey]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT tenant, event_id FROM usage_event WHERE project = $1", project
        )
    finally:
        await connection.close()
    return {(row["tenant"], row["event_id"]) for row in rows}
