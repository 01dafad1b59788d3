"""Aggregates stay exact however posts and folds interleave.

Random posts and folds of pending deltas into the rollups (whole or partial folds, between
posts and while a post is in flight) run in random order; after every step the totals, a
series, a launch summary (busiest minute and milestones) and a milestone search must equal a
plain Python model of the stored events. A delta lost, or folded twice, shows as a wrong sum.
"""

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ClientFactory, empty_all_but_keys
from tests.test_aggregate_properties import (
    CENTERS,
    MODELS,
    Sent,
    at,
    expected_results,
    floor_minute,
    sent_events,
    stored_events,
)
from tokenpulse.instants import format_rfc3339
from tokenpulse.rollups.fold import fold
from tokenpulse.rollups.materialiser import pending
from tokenpulse.rollups.selection import MEASURES

# The launch lies before every event a center's events can have: they are within two days.
LEAD = timedelta(days=3)


@dataclass(frozen=True)
class Post:
    events: list[Sent]
    fold_meanwhile: int | None
    """Fold at most this many pending rows while the post is in flight; None: no fold."""


@dataclass(frozen=True)
class Fold:
    max_rows: int


Step = Post | Fold


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[datetime, list[Step]]:
    center = draw(st.sampled_from(CENTERS))
    folds = st.builds(Fold, st.sampled_from([1, 2, 3, 1000]))
    posts = st.builds(
        Post,
        st.lists(sent_events(center), min_size=1, max_size=10),
        st.none() | st.sampled_from([1, 1000]),
    )
    steps = draw(st.lists(posts | folds, min_size=1, max_size=6))
    return center, steps


async def fold_now(engine: AsyncEngine, max_rows: int) -> None:
    async with engine.begin() as connection:
        await fold(connection, max_rows=max_rows)


async def post(client: httpx.AsyncClient, events: list[Sent]) -> None:
    response = await client.post("/v1/events", json={"events": [e.as_json() for e in events]})
    assert response.status_code == 200, response.text


async def run(engine: AsyncEngine, client: httpx.AsyncClient, step: Step) -> list[Sent]:
    """Carry out `step`; the events it sent."""
    if isinstance(step, Fold):
        await fold_now(engine, step.max_rows)
        return []
    if step.fold_meanwhile is None:
        await post(client, step.events)
    else:
        await asyncio.gather(post(client, step.events), fold_now(engine, step.fold_meanwhile))
    return step.events


# the model


def busiest_minute(events: list[Sent], model: str, since: datetime) -> dict[str, Any] | None:
    minutes: dict[datetime, int] = defaultdict(int)
    for sent in events:
        if sent.model == model and sent.occurred_at >= since:
            minutes[floor_minute(sent.occurred_at)] += sent.total_tokens
    if not minutes:
        return None
    start = min(minutes, key=lambda minute: (-minutes[minute], minute))
    return {"start": format_rfc3339(start), "total_tokens": minutes[start], "cost": None}


def crossing(
    events: list[Sent], model: str, since: datetime, threshold: int
) -> tuple[datetime, str] | None:
    """The SPEC's crossing rule: the first event, by (occurred_at, event_id in byte order), at
    which the running sum of total tokens reaches `threshold`."""
    ordered = sorted(
        (sent for sent in events if sent.model == model and sent.occurred_at >= since),
        key=lambda sent: (sent.occurred_at, sent.event_id.encode()),
    )
    running = accumulate(sent.total_tokens for sent in ordered)
    for sent, total in zip(ordered, running, strict=True):
        if total >= threshold:
            return sent.occurred_at, sent.event_id
    return None


def measures(events: list[Sent]) -> dict[str, int]:
    """The seven measures of `events`, all 0 for none."""
    (row,) = expected_results(events, {"group_by": ""}) or [
        {**dict.fromkeys(MEASURES, 0), "cost": None}
    ]
    return dict(row)


# the checks


async def check_every_aggregate(
    client: httpx.AsyncClient, events: list[Sent], center: datetime, threshold: int
) -> None:
    launched_at = floor_minute(center - LEAD)
    everything = {"start": format_rfc3339(launched_at)}
    for group_by in ("model,tenant", "api_key_id,project", ""):
        params = {**everything, "group_by": group_by}
        answer = (await client.get("/v1/totals", params=params)).json()
        assert answer["results"] == expected_results(events, params), group_by

    hours = {
        "bucket": "1h",
        "group_by": "model",
        "start": format_rfc3339(launched_at.replace(minute=0)),
        "end": format_rfc3339(launched_at.replace(minute=0) + timedelta(hours=6 * 24)),
    }
    series = (await client.get("/v1/usage", params=hours)).json()["data"]
    for bucket in series:
        lo, hi = at(bucket["start"]), at(bucket["end"])
        inside = [sent for sent in events if lo <= sent.occurred_at < hi]
        assert bucket["results"] == expected_results(inside, hours), bucket["start"]

    model = MODELS[0]
    summary = (await client.get(f"/v1/launches/{model}")).json()
    assert summary["since_launch"] == measures([s for s in events if s.model == model])
    assert summary["peak_minute"] == busiest_minute(events, model, launched_at)
    for milestone in summary["milestones"]:
        found = crossing(events, model, launched_at, milestone["threshold"])
        reached = None if found is None else (format_rfc3339(found[0]), found[1])
        assert (milestone["crossed_at"], milestone["event_id"]) == (reached or (None, None))

    search: dict[str, str | int] = {
        "model": model,
        "threshold": threshold,
        "since": format_rfc3339(launched_at),
    }
    answer = (await client.get("/v1/milestones", params=search)).json()
    found = crossing(events, model, launched_at, threshold)
    assert (answer["crossed_at"], answer["event_id"]) == (
        (None, None) if found is None else (format_rfc3339(found[0]), found[1])
    )


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios(), threshold=st.integers(1, 3 * 10**9))
async def test_every_aggregate_is_exact_after_every_post_and_fold_in_any_order(
    db: AsyncEngine,
    make_client: ClientFactory,
    scenario: tuple[datetime, list[Step]],
    threshold: int,
) -> None:
    center, steps = scenario
    await empty_all_but_keys(db)
    # The service's own materialiser waits an hour between folds: the test decides when.
    async with make_client(materialise_interval=3600) as client:
        put = {"launched_at": format_rfc3339(floor_minute(center - LEAD))}
        assert (await client.put(f"/v1/launches/{MODELS[0]}", json=put)).status_code == 201
        sent: list[list[Sent]] = []
        for step in steps:
            if batch := await run(db, client, step):
                sent.append(batch)
            await check_every_aggregate(client, stored_events(sent), center, threshold)

        await fold_now(db, max_rows=10**6)
        async with db.connect() as connection:
            assert (await pending(connection)).rows == 0
        await check_every_aggregate(client, stored_events(sent), center, threshold)
