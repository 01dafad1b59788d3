"""Launches: registering one, and its summary — since launch, first day, peak minute, milestones."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.event import listen, remove
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, bearer, empty_all_but_keys
from tests.factories import event, measures
from tests.servers import running_server
from tokenpulse.instants import format_rfc3339

LAUNCH = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def post(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    response = await client.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 200, response.text


async def test_putting_a_launch_creates_it_then_moves_it(client: httpx.AsyncClient) -> None:
    created = await client.put("/v1/launches/gpt-5.2", json={"launched_at": "2026-11-27T09:00:00Z"})
    moved = await client.put(
        "/v1/launches/gpt-5.2", json={"launched_at": "2026-11-27T10:30:00+01:00"}
    )
    listed = await client.get("/v1/launches")

    assert created.status_code == 201
    assert created.json() == {"model": "gpt-5.2", "launched_at": "2026-11-27T09:00:00Z"}
    assert moved.status_code == 200
    assert listed.json() == {
        "launches": [{"model": "gpt-5.2", "launched_at": "2026-11-27T09:30:00Z"}]
    }


async def test_a_launch_needs_an_rfc3339_instant_and_a_platform_admin(
    make_client: ClientFactory, keys: Keys
) -> None:
    async with make_client() as client:
        naive = await client.put("/v1/launches/m", json={"launched_at": "2026-11-27T09:00:00"})
        extra = await client.put("/v1/launches/m", json={"launched_at": "x", "by": "me"})
    async with make_client(token=await keys.create("admin", tenant="acme")) as client:
        bound = await client.put("/v1/launches/m", json={"launched_at": "2026-11-27T09:00:00Z"})
    async with make_client(token=await keys.create("read")) as client:
        reader = await client.put("/v1/launches/m", json={"launched_at": "2026-11-27T09:00:00Z"})
        missing = await client.get("/v1/launches/m")

    assert naive.status_code == 422
    assert naive.json()["error"]["errors"] == [
        {"field": "launched_at", "message": "must include a UTC offset ('Z' or ±hh:mm)"}
    ]
    assert extra.status_code == 422
    assert (bound.status_code, reader.status_code) == (403, 403)
    assert missing.status_code == 404


async def test_the_summary_counts_since_launch_the_first_24_hours_and_the_peak_minute(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"})
    before = event(at=LAUNCH - timedelta(microseconds=1), input_tokens=999)
    first = event(
        at=LAUNCH,
        input_tokens=10,
        output_tokens=5,
        cached_input_tokens=4,
        cache_write_input_tokens=6,
    )
    busy = [
        event(
            at=LAUNCH + timedelta(hours=3, seconds=s), input_tokens=100, cache_write_input_tokens=s
        )
        for s in (1, 59)
    ]
    # Cache writes are part of input tokens: counted again, this minute would be the busiest.
    writing = event(
        at=LAUNCH + timedelta(hours=5),
        input_tokens=1700,
        cache_write_input_tokens=1700,
        output_tokens=0,
    )
    last_of_day = event(
        at=LAUNCH + timedelta(hours=24) - timedelta(microseconds=1), input_tokens=1, output_tokens=1
    )
    next_day = event(at=LAUNCH + timedelta(hours=24), input_tokens=7, reasoning_tokens=3)
    other_model = event(at=LAUNCH + timedelta(hours=1), model="m-small", input_tokens=10**6)
    await post(client, before, first, *busy, writing, last_of_day, next_day, other_model)

    response = await client.get("/v1/launches/m-large")

    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["model"] == "m-large"
    assert summary["launched_at"] == "2026-11-25T09:00:00Z"
    assert summary["since_launch"] == measures(first, *busy, writing, last_of_day, next_day)
    assert summary["first_24h"] == measures(first, *busy, writing, last_of_day)
    assert summary["first_24h"]["cache_write_input_tokens"] == 6 + 1 + 59 + 1700
    assert summary["peak_minute"] == {
        "start": "2026-11-25T12:00:00Z",
        "total_tokens": 1800,
        "cost": None,
    }
    assert summary["milestones"] == [
        {"threshold": 10**n, "crossed_at": None, "seconds_after_launch": None, "event_id": None}
        for n in (9, 10, 11, 12)
    ]


async def test_the_summary_lists_the_milestones_reached_with_the_event_that_crossed_them(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"})
    big = [
        event(
            event_id=f"big-{n}",
            at=LAUNCH + timedelta(hours=n, microseconds=112_000),
            input_tokens=10**9,
            output_tokens=10**9 // 4,
        )
        for n in range(9)
    ]
    await post(client, *big)

    milestones = (await client.get("/v1/launches/m-large")).json()["milestones"]

    assert milestones == [
        {
            "threshold": 10**9,
            "crossed_at": "2026-11-25T09:00:00.112000Z",
            "seconds_after_launch": 0.112,
            "event_id": "big-0",
        },
        {
            "threshold": 10**10,
            "crossed_at": "2026-11-25T16:00:00.112000Z",
            "seconds_after_launch": 25200.112,
            "event_id": "big-7",
        },
        {"threshold": 10**11, "crossed_at": None, "seconds_after_launch": None, "event_id": None},
        {"threshold": 10**12, "crossed_at": None, "seconds_after_launch": None, "event_id": None},
    ]


async def test_a_launch_that_cuts_a_minute_counts_only_what_came_after_it(
    client: httpx.AsyncClient,
) -> None:
    launched = LAUNCH + timedelta(seconds=30)
    await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:30Z"})
    early = event(
        at=launched - timedelta(seconds=10), input_tokens=5000, cache_write_input_tokens=9
    )
    late = event(at=launched + timedelta(seconds=10), input_tokens=50, cache_write_input_tokens=40)

    await post(client, early, late)
    summary = (await client.get("/v1/launches/m-large")).json()

    assert summary["since_launch"] == measures(late)
    assert summary["first_24h"] == measures(late)
    assert summary["peak_minute"] == {
        "start": "2026-11-25T09:00:00Z",
        "total_tokens": 850,
        "cost": None,
    }


async def test_a_tenant_bound_key_sees_a_launch_summary_of_its_own_usage(
    make_client: ClientFactory, keys: Keys
) -> None:
    async with make_client() as client:
        await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"})
        await post(
            client,
            event(at=LAUNCH + timedelta(minutes=5), tenant="acme", input_tokens=1),
            event(at=LAUNCH + timedelta(minutes=6), tenant="globex", input_tokens=10**9),
        )
    async with make_client(token=await keys.create("read", tenant="acme")) as client:
        summary = (await client.get("/v1/launches/m-large")).json()
        launches = (await client.get("/v1/launches")).json()

    assert summary["since_launch"]["requests"] == 1
    assert summary["peak_minute"] == {
        "start": "2026-11-25T09:05:00Z",
        "total_tokens": 801,
        "cost": None,
    }
    assert summary["milestones"][0]["crossed_at"] is None
    assert launches["launches"] == [{"model": "m-large", "launched_at": "2026-11-25T09:00:00Z"}]


async def test_a_launch_far_in_the_future_or_a_model_name_that_is_not_text_is_refused(
    client: httpx.AsyncClient,
) -> None:
    far = await client.put("/v1/launches/m", json={"launched_at": "9999-12-31T23:59:59Z"})
    nul = await client.get("/v1/launches/a%00b")

    assert far.status_code == 422
    assert far.json()["error"]["errors"][0]["field"] == "launched_at"
    assert nul.status_code == 422


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.lists(
        st.tuples(
            # Minutes over three days, most in a few busy hours, so that hours and days hold
            # many minutes; and seconds inside them, so that the launch may cut one.
            st.one_of(
                st.integers(min_value=0, max_value=180),
                st.integers(min_value=0, max_value=3 * 1440 - 1),
            ),
            st.integers(min_value=0, max_value=59),
            st.integers(min_value=0, max_value=50),
        ),
        min_size=1,
        max_size=60,
    ),
    requests=st.integers(min_value=1, max_value=6),
    concurrent=st.booleans(),
    launch_offset=st.integers(min_value=-60, max_value=2 * 86400),
)
async def test_the_peak_minute_equals_the_busiest_minute_of_the_events(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    data: list[tuple[int, int, int]],
    requests: int,
    concurrent: bool,
    launch_offset: int,
) -> None:
    await empty_all_but_keys(db)
    model = "m-large"
    base = LAUNCH - timedelta(days=1)
    launched_at = base + timedelta(seconds=launch_offset)
    events = [
        event(
            event_id=f"e{index}",
            at=base + timedelta(minutes=minute, seconds=second),
            model=model,
            input_tokens=tokens,
            cache_write_input_tokens=tokens // 2,
            output_tokens=tokens % 7,
        )
        for index, (minute, second, tokens) in enumerate(data)
    ]
    await client.put(f"/v1/launches/{model}", json={"launched_at": format_rfc3339(launched_at)})
    # One request after another adds to the busiest minutes that earlier ones stored; concurrent
    # requests may be stored by one transaction or by several at once.
    count = min(requests, len(events))
    parts = [events[part::count] for part in range(count)]
    if concurrent:
        await asyncio.gather(*(post(client, *part) for part in parts))
    else:
        for part in parts:
            await post(client, *part)
    by_minute: dict[datetime, int] = {}
    for e in events:
        at = datetime.fromisoformat(e["occurred_at"])
        if at >= launched_at:
            minute = at.replace(second=0, microsecond=0)
            by_minute[minute] = by_minute.get(minute, 0) + e["input_tokens"] + e["output_tokens"]
    busiest = min(by_minute.items(), key=lambda item: (-item[1], item[0]), default=None)

    summary = (await client.get(f"/v1/launches/{model}")).json()

    assert summary["peak_minute"] == (
        None
        if busiest is None
        else {"start": format_rfc3339(busiest[0]), "total_tokens": busiest[1], "cost": None}
    )


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.integers(min_value=0, max_value=2).flatmap(
        lambda scale: st.lists(
            st.tuples(
                # Quarter seconds over three days, many in a few busy hours, so that thresholds
                # fall in the launch's cut minute and in minutes, hours and days that hold many
                # minutes.
                st.one_of(
                    st.integers(min_value=0, max_value=3 * 3600 * 4),
                    st.integers(min_value=0, max_value=3 * 86400 * 4),
                ).map(lambda q: q * 0.25),
                # Up to 2 * 10**9 tokens an event: 10**9 and 10**10 are reached after a few
                # events, 10**11 after fifty of the largest.
                st.one_of(
                    st.integers(min_value=0, max_value=100).map(lambda n: n * 10**7),
                    st.just(10**9),
                ),
            ),
            # Mostly a few events; a third of the time enough to pass 10**11 now and then.
            min_size=1 if scale else 60,
            max_size=20 if scale else 120,
        )
    ),
    # In quarter seconds: on a whole minute now and then, cutting one otherwise.
    launch_offset=st.integers(min_value=-3600 * 4, max_value=3 * 3600 * 4).map(lambda q: q * 0.25),
)
async def test_the_totals_and_every_milestone_match_a_walk_over_the_events_since_launch(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    data: list[tuple[float, int]],
    launch_offset: float,
) -> None:
    await empty_all_but_keys(db)
    model = "m-large"
    base = LAUNCH - timedelta(days=1)
    launched_at = base + timedelta(seconds=launch_offset)
    events = [
        event(
            event_id=f"e{index}",
            at=base + timedelta(seconds=offset),
            model=model,
            input_tokens=tokens,
            cached_input_tokens=tokens // 4,
            cache_write_input_tokens=tokens // 3,
            output_tokens=tokens,
        )
        for index, (offset, tokens) in enumerate(data)
    ]
    await client.put(f"/v1/launches/{model}", json={"launched_at": format_rfc3339(launched_at)})
    await post(client, *events)
    counted = sorted(
        (e for e in events if datetime.fromisoformat(e["occurred_at"]) >= launched_at),
        key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["event_id"]),
    )
    expected: dict[int, tuple[str, str] | None] = {10**n: None for n in (9, 10, 11, 12)}
    running = 0
    for e in counted:
        running += e["input_tokens"] + e["output_tokens"]
        for threshold, found in expected.items():
            if found is None and running >= threshold:
                expected[threshold] = (e["event_id"], e["occurred_at"])
    first_day = [
        e
        for e in counted
        if datetime.fromisoformat(e["occurred_at"]) < launched_at + timedelta(hours=24)
    ]

    summary = (await client.get(f"/v1/launches/{model}")).json()

    assert {
        m["threshold"]: None if m["event_id"] is None else (m["event_id"], m["crossed_at"])
        for m in summary["milestones"]
    } == expected
    assert summary["since_launch"] == measures(*counted)
    assert summary["first_24h"] == measures(*first_day)


async def test_a_summary_runs_as_many_statements_after_three_milestones_as_after_one(
    make_client: ClientFactory,
) -> None:
    # Only the summary's own statements are counted: the key stays cached, since the test's
    # monotonic clock does not move, and the materialiser, whose statements run on their own
    # engine, waits meanwhile.
    async with make_client(materialise_interval=3600) as client:
        model = "m-large"
        await client.put(f"/v1/launches/{model}", json={"launched_at": "2026-11-25T09:00:00Z"})
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        async def summary_statements() -> list[str]:
            await client.get(f"/v1/launches/{model}")  # the key is looked up once
            statements.clear()
            listen(Engine, "before_cursor_execute", record)
            try:
                assert (await client.get(f"/v1/launches/{model}")).status_code == 200
            finally:
                remove(Engine, "before_cursor_execute", record)
            return list(statements)

        # The milestones are reached at three hours of the first whole day after the launch, which
        # the search opens into hours, then minutes.
        day = datetime(2026, 11, 26, tzinfo=UTC)
        first = event(event_id="first", at=day + timedelta(hours=3, minutes=7), input_tokens=10**9)
        await post(client, first)
        after_one = await summary_statements()
        later = [(timedelta(hours=10), 5), (timedelta(hours=20), 45)]
        for group, (at, events) in enumerate(later, 1):
            await post(
                client,
                *(
                    event(
                        event_id=f"e{group}-{n:03}",
                        at=day + at,
                        model=model,
                        input_tokens=10**9,
                        output_tokens=10**9,
                    )
                    for n in range(events)
                ),
            )
        after_three = await summary_statements()

        milestones = (await client.get(f"/v1/launches/{model}")).json()["milestones"]
        assert [m["event_id"] for m in milestones] == ["first", "e1-004", "e2-044", None]
        assert len(after_three) == len(after_one)


# Model names with a slash (`meta-llama/Llama-3-70b`), as many gateways name models.

SLASHED = "meta-llama/Llama-3-70b"


async def test_a_model_name_with_a_slash_is_launched_and_read_with_the_slash_literal_or_escaped(
    client: httpx.AsyncClient,
) -> None:
    ours = [event(model=SLASHED, input_tokens=10), event(model=SLASHED, output_tokens=5)]
    # Its parts as model names of their own, which must not be mistaken for it.
    await post(client, *ours, event(model="meta-llama"), event(model="Llama-3-70b"))

    created = await client.put(
        "/v1/launches/meta-llama/Llama-3-70b", json={"launched_at": "2026-11-27T09:00:00Z"}
    )
    moved = await client.put(
        "/v1/launches/meta-llama%2FLlama-3-70b", json={"launched_at": "2026-11-27T10:00:00Z"}
    )
    literal = await client.get("/v1/launches/meta-llama/Llama-3-70b")
    escaped = await client.get("/v1/launches/meta-llama%2FLlama-3-70b")
    listed = await client.get("/v1/launches")
    milestone = await client.get("/v1/milestones?model=meta-llama/Llama-3-70b&threshold=1")
    unknown = await client.get("/v1/launches/meta-llama/Llama-3-8b")

    assert created.status_code == 201
    assert created.json() == {"model": SLASHED, "launched_at": "2026-11-27T09:00:00Z"}
    assert moved.status_code == 200
    assert moved.json() == {"model": SLASHED, "launched_at": "2026-11-27T10:00:00Z"}
    assert literal.status_code == 200
    assert escaped.json() == literal.json()
    summary = literal.json()
    assert (summary["model"], summary["launched_at"]) == (SLASHED, "2026-11-27T10:00:00Z")
    assert summary["since_launch"] == measures(*ours)
    assert listed.json() == {
        "launches": [{"model": SLASHED, "launched_at": "2026-11-27T10:00:00Z"}]
    }
    assert milestone.json()["since"] == "2026-11-27T10:00:00Z"
    assert milestone.json()["current"] == measures(*ours)["total_tokens"]
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith("no launch is set for this model")


async def test_any_model_name_ingest_accepts_has_a_launch_route_and_the_bare_path_lists_them(
    client: httpx.AsyncClient,
) -> None:
    names = ["line\nbreak", "trailing/", "a//b"]
    await post(client, *(event(model=name) for name in names))

    put = [
        await client.put(
            f"/v1/launches/{quote(name, safe='')}", json={"launched_at": "2026-11-27T09:00:00Z"}
        )
        for name in names
    ]
    got = [(await client.get(f"/v1/launches/{quote(name, safe='')}")).json() for name in names]
    bare = await client.get("/v1/launches/")

    assert [answer.status_code for answer in put] == [201, 201, 201]
    assert [(summary["model"], summary["since_launch"]["requests"]) for summary in got] == [
        (name, 1) for name in names
    ]
    assert (bare.status_code, bare.headers["location"]) == (
        307,
        "http://tokenpulse.test/v1/launches",
    )


@pytest.mark.process
def test_a_real_server_routes_a_model_name_with_a_slash_sent_literal_or_as_2f(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    now = datetime.now(UTC)
    with (
        running_server(tmp_path, env=env) as server,
        httpx.Client(base_url=server.url, headers=bearer(keys.admin)) as http,
    ):
        sent = event(at=now - timedelta(minutes=1), model=SLASHED)
        assert http.post("/v1/events", json=sent).json()["accepted"] == 1
        launched_at = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = http.put(
            "/v1/launches/meta-llama%2FLlama-3-70b", json={"launched_at": launched_at}
        )
        moved = http.put("/v1/launches/meta-llama/Llama-3-70b", json={"launched_at": launched_at})
        literal = http.get("/v1/launches/meta-llama/Llama-3-70b")
        escaped = http.get("/v1/launches/meta-llama%2FLlama-3-70b")

    assert (created.status_code, moved.status_code) == (201, 200)
    assert created.json() == {"model": SLASHED, "launched_at": launched_at}
    for answer in (literal, escaped):
        assert answer.status_code == 200
        assert answer.json()["model"] == SLASHED
        assert answer.json()["since_launch"] == measures(sent)


# Deleting a launch: only the launch goes, never its model's events.


async def test_deleting_a_launch_removes_it_and_its_summary_but_not_its_events(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"})
    await client.put("/v1/launches/m-small", json={"launched_at": "2026-11-25T10:00:00Z"})
    sent = event(at=LAUNCH + timedelta(hours=1), input_tokens=10**9)
    await post(client, sent)
    before = (await client.get("/v1/launches/m-large")).json()

    deleted = await client.delete("/v1/launches/m-large")
    summary = await client.get("/v1/launches/m-large")
    listed = await client.get("/v1/launches")
    milestone = await client.get("/v1/milestones?model=m-large&threshold=1")
    counted = await client.get(
        "/v1/milestones?model=m-large&threshold=1&since=2026-11-25T09:00:00Z"
    )
    again = await client.delete("/v1/launches/m-large")
    restored = await client.put(
        "/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"}
    )

    assert (deleted.status_code, deleted.content) == (204, b"")
    assert summary.status_code == 404
    assert listed.json() == {
        "launches": [{"model": "m-small", "launched_at": "2026-11-25T10:00:00Z"}]
    }
    assert milestone.status_code == 422
    assert milestone.json()["error"]["errors"][0]["field"] == "since"
    assert counted.json()["current"] == measures(sent)["total_tokens"]
    assert again.status_code == 404
    assert restored.status_code == 201
    assert (await client.get("/v1/launches/m-large")).json() == before


async def test_deleting_a_launch_that_is_not_set_is_not_found_in_the_one_error_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/v1/launches/m-large")

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "not_found", "message": "no launch is set for this model"}
    }


@pytest.mark.parametrize(
    ("caller", "status"),
    [("no key", 401), ("ingest", 403), ("read", 403), ("tenant admin", 403)],
)
async def test_only_a_platform_admin_key_may_delete_a_launch(
    make_client: ClientFactory, keys: Keys, caller: str, status: int
) -> None:
    tokens = {
        "no key": None,
        "ingest": await keys.create("ingest"),
        "read": await keys.create("read"),
        "tenant admin": await keys.create("admin", tenant="acme"),
    }
    async with make_client() as admin:
        await admin.put("/v1/launches/m-large", json={"launched_at": "2026-11-25T09:00:00Z"})
        async with make_client(token=tokens[caller]) as client:
            response = await client.delete("/v1/launches/m-large")
        listed = (await admin.get("/v1/launches")).json()

    assert response.status_code == status
    assert listed == {"launches": [{"model": "m-large", "launched_at": "2026-11-25T09:00:00Z"}]}


async def test_a_launch_with_a_slash_in_its_model_name_is_deleted_literal_or_escaped(
    client: httpx.AsyncClient,
) -> None:
    for name in (SLASHED, "meta-llama", "Llama-3-70b"):
        await client.put(
            f"/v1/launches/{quote(name, safe='')}", json={"launched_at": "2026-11-27T09:00:00Z"}
        )

    literal = await client.delete("/v1/launches/meta-llama/Llama-3-70b")
    await client.put(
        "/v1/launches/meta-llama/Llama-3-70b", json={"launched_at": "2026-11-27T09:00:00Z"}
    )
    escaped = await client.delete("/v1/launches/meta-llama%2FLlama-3-70b")
    summary = await client.get("/v1/launches/meta-llama/Llama-3-70b")
    listed = (await client.get("/v1/launches")).json()["launches"]

    assert (literal.status_code, escaped.status_code) == (204, 204)
    assert summary.status_code == 404
    assert [launch["model"] for launch in listed] == ["Llama-3-70b", "meta-llama"]
