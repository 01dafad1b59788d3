"""OpenAI's own SDK reading tokenpulse as it reads OpenAI: `admin.organization.usage.completions()`
and `.costs()` parse every answer with their own models, page through it with `next_page`, and
find the figures tokenpulse's own `/v1/usage` answers; the organization is a tenant, which a key
reads only if it may; and a parameter tokenpulse cannot honour is refused by name."""

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.admin.organization.usage_completions_response import (
    DataResultOrganizationUsageCompletionsResult,
    UsageCompletionsResponse,
)
from openai.types.admin.organization.usage_costs_response import (
    DataResultOrganizationCostsResult,
    UsageCostsResponse,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, Clock, Keys, Ticker, bearer
from tests.factories import event
from tokenpulse.app import create_app
from tokenpulse.rollups.fold import fold
from tokenpulse.settings import Settings

BASE_URL = "http://tokenpulse.test"
DAY = datetime(2026, 11, 25, tzinfo=UTC)
"""Two days and a half before NOW: the first day of the events below."""

PRICES = {
    "m-large": {
        "input": "2.5",
        "cached_input": "0.25",
        "cache_write_input": "3.125",
        "output": "10",
        "reasoning": "12.000000000001",
    },
    "m-small": {"input": "0.15", "output": "0.6"},
}
"""m-unpriced has none."""

LARGE = {
    "input_tokens": 1_000_003,
    "cached_input_tokens": 200_001,
    "cache_write_input_tokens": 100_007,
    "output_tokens": 50_011,
    "reasoning_tokens": 20_003,
}
EVENTS = [
    event(
        at=DAY + timedelta(hours=1, minutes=5),
        project="search",
        model="m-large",
        api_key_id="key-a",
        **LARGE,
    ),
    event(
        at=DAY + timedelta(hours=1, minutes=30, seconds=10),
        project="search",
        model="m-small",
        input_tokens=500,
        output_tokens=100,
    ),
    event(
        at=DAY + timedelta(days=1, hours=2, minutes=10),
        project="chat",
        model="m-large",
        api_key_id="key-b",
        input_tokens=2000,
        cached_input_tokens=500,
        output_tokens=700,
    ),
    event(
        at=DAY + timedelta(days=1, hours=2, minutes=10),
        model="m-unpriced",
        input_tokens=50,
        output_tokens=5,
    ),
    event(
        at=NOW - timedelta(minutes=30),
        project="chat",
        model="m-small",
        api_key_id="key-a",
        input_tokens=300,
        output_tokens=30,
    ),
    event(
        at=DAY + timedelta(hours=1, minutes=5),
        tenant="globex",
        project="search",
        model="m-large",
        input_tokens=9999,
        output_tokens=9999,
    ),
]
"""acme's usage over three days, and one event of globex's, which acme's reads never count."""

TOKENPULSE_NAMES = {
    "project_id": "project",
    "api_key_id": "api_key_id",
    "model": "model",
    "line_item": "model",
    "project_ids": "project",
    "api_key_ids": "api_key_id",
    "models": "model",
    "line_items": "model",
}

Buckets = list[tuple[int, int, list[dict[str, Any]]]]
"""Each bucket's start and end in Unix seconds, and its results."""


def seconds(instant: datetime) -> int:
    return int(instant.timestamp())


@dataclass
class Service:
    own: httpx.AsyncClient
    """tokenpulse's own API, with the platform admin key."""
    sdk_transport: httpx2.AsyncClient

    def openai(self, key: str, organization: str | None = "acme") -> AsyncOpenAI:
        """OpenAI's client, pointed at tokenpulse with `key` as its admin key."""
        return AsyncOpenAI(
            admin_api_key=key,
            organization=organization,
            base_url=f"{BASE_URL}/v1",
            http_client=self.sdk_transport,
            max_retries=0,
        )

    async def usage(
        self,
        *,
        bucket: str,
        start: datetime,
        end: datetime,
        group_by: Sequence[str] = (),
        tenant: str = "acme",
        **filters: list[str],
    ) -> Buckets:
        """What `/v1/usage` answers for the same read, in the SDK's terms."""
        params: dict[str, Any] = {
            "bucket": bucket,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "tenant": tenant,
            **{TOKENPULSE_NAMES[name]: values for name, values in filters.items()},
        }
        if group_by:
            params["group_by"] = ",".join(
                dict.fromkeys(TOKENPULSE_NAMES[f] for f in group_by if f in TOKENPULSE_NAMES)
            )
        response = await self.own.get("/v1/usage", params=params)
        assert response.status_code == 200, response.text
        return [
            (
                seconds(datetime.fromisoformat(bucket["start"])),
                seconds(datetime.fromisoformat(bucket["end"])),
                [_own_result(result) for result in bucket["results"]],
            )
            for bucket in response.json()["data"]
        ]


def _own_result(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "requests": result["requests"],
        "input_tokens": result["input_tokens"],
        "cached_input_tokens": result["cached_input_tokens"],
        "cache_write_input_tokens": result["cache_write_input_tokens"],
        "output_tokens": result["output_tokens"],
        "project": result.get("project"),
        "api_key_id": result.get("api_key_id"),
        "model": result.get("model"),
        "cost": result["cost"],
    }


def completions_buckets(page: UsageCompletionsResponse) -> Buckets:
    """The SDK's parsed page in the terms of `/v1/usage`."""
    buckets: Buckets = []
    for bucket in page.data:
        results = []
        for result in bucket.results:
            assert isinstance(result, DataResultOrganizationUsageCompletionsResult)
            results.append(
                {
                    "requests": result.num_model_requests,
                    "input_tokens": result.input_tokens,
                    "cached_input_tokens": result.input_cached_tokens,
                    "cache_write_input_tokens": result.input_cache_write_tokens,
                    "output_tokens": result.output_tokens,
                    "project": result.project_id,
                    "api_key_id": result.api_key_id,
                    "model": result.model,
                }
            )
        buckets.append((bucket.start_time, bucket.end_time, results))
    return buckets


def without_cost(buckets: Buckets) -> Buckets:
    return [
        (start, end, [{k: v for k, v in r.items() if k != "cost"} for r in results])
        for start, end, results in buckets
    ]


def costs_buckets(page: UsageCostsResponse) -> Buckets:
    buckets: Buckets = []
    for bucket in page.data:
        results = []
        for result in bucket.results:
            assert isinstance(result, DataResultOrganizationCostsResult)
            assert result.amount is not None
            assert result.amount.currency == "usd"
            results.append(
                {
                    "cost": result.amount.value,
                    "model": result.line_item,
                    "project": result.project_id,
                    "api_key_id": result.api_key_id,
                }
            )
        buckets.append((bucket.start_time, bucket.end_time, results))
    return buckets


def written_costs(answer: Mapping[str, Any]) -> Buckets:
    """The costs API's answer as it is written, amounts read as decimals, in the terms of
    `/v1/usage`."""
    return [
        (
            bucket["start_time"],
            bucket["end_time"],
            [
                {
                    "cost": r["amount"]["value"],
                    "model": r["line_item"],
                    "project": r["project_id"],
                    "api_key_id": r["api_key_id"],
                }
                for r in bucket["results"]
            ],
        )
        for bucket in answer["data"]
    ]


def priced(buckets: Buckets, cost: type[float] | type[Decimal]) -> Buckets:
    """`/v1/usage`'s buckets as the costs API has them: the priced groups' cost and keys."""
    return [
        (
            start,
            end,
            [
                {
                    "cost": cost(r["cost"]),
                    "model": r["model"],
                    "project": r["project"],
                    "api_key_id": r["api_key_id"],
                }
                for r in results
                if r["cost"] is not None
            ],
        )
        for start, end, results in buckets
    ]


@pytest.fixture
async def service(
    settings: Settings, clock: Clock, monotonic: Ticker, keys: Keys
) -> AsyncIterator[Service]:
    """tokenpulse with acme's and globex's events and the prices of two models."""
    app = create_app(settings, clock=clock, monotonic=monotonic)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL, headers=bearer(keys.admin)
        ) as own,
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app)) as sdk_transport,
    ):
        for model, prices in PRICES.items():
            body = {
                "effective_from": (DAY - timedelta(days=2)).isoformat(),
                "per_million_tokens": prices,
            }
            response = await own.put(f"/v1/prices/{model}", json=body)
            assert response.status_code == 201, response.text
        response = await own.post("/v1/events", json={"events": EVENTS})
        assert response.json()["accepted"] == len(EVENTS), response.text
        yield Service(own, sdk_transport)


@pytest.fixture
async def reader(keys: Keys) -> str:
    """A platform read key, which names the tenant it reads."""
    return await keys.create("read")


RANGES = {
    "1m": (DAY + timedelta(hours=1), DAY + timedelta(hours=2)),
    "1h": (DAY, DAY + timedelta(days=2)),
    "1d": (DAY, DAY + timedelta(days=3)),
}
"""A range of each width that holds events, in at most as many buckets as a page may."""
WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
GROUPINGS = [
    [],
    ["model"],
    ["project_id", "api_key_id"],
    ["api_key_id", "model", "project_id", "user_id", "batch", "service_tier"],
]


@pytest.mark.parametrize("group_by", GROUPINGS, ids=lambda g: ",".join(g) or "ungrouped")
@pytest.mark.parametrize("bucket_width", list(RANGES))
async def test_completions_usage_of_each_bucket_width_is_the_usage_series_of_the_same_range(
    service: Service, reader: str, bucket_width: Any, group_by: Any
) -> None:
    start, end = RANGES[bucket_width]
    buckets = (end - start) // WIDTHS[bucket_width]

    page = await service.openai(reader).admin.organization.usage.completions(
        start_time=seconds(start),
        end_time=seconds(end),
        bucket_width=bucket_width,
        group_by=group_by,
        limit=buckets,
    )
    expected = await service.usage(bucket=bucket_width, start=start, end=end, group_by=group_by)

    assert completions_buckets(page) == without_cost(expected)
    assert len(page.data) == buckets
    assert any(bucket.results for bucket in page.data)
    assert (page.object, page.has_more, page.next_page) == ("page", False, None)


async def test_completions_usage_of_a_day_sums_its_events_as_openai_counts_them(
    service: Service, reader: str
) -> None:
    client = service.openai(reader)

    page = await client.admin.organization.usage.completions(
        start_time=seconds(DAY), end_time=seconds(DAY + timedelta(days=1))
    )
    by_model = await client.admin.organization.usage.completions(
        start_time=seconds(DAY), end_time=seconds(DAY + timedelta(days=1)), group_by=["model"]
    )

    [bucket] = page.data
    assert (bucket.start_time, bucket.end_time) == (1795564800, 1795651200)
    [day] = bucket.results
    assert isinstance(day, DataResultOrganizationUsageCompletionsResult)
    # The day's two events of acme's: m-large's counts, and 500 input and 100 output tokens.
    assert day.model_dump(exclude_none=True) == {
        "object": "organization.usage.completions.result",
        "num_model_requests": 2,
        "input_tokens": 1_000_503,
        "output_tokens": 50_111,
        "input_cached_tokens": 200_001,
        "input_cache_write_tokens": 100_007,
        "input_uncached_tokens": 1_000_503 - 200_001 - 100_007,
    }
    assert (day.user_id, day.batch, day.service_tier, day.input_audio_tokens) == (None,) * 4
    assert [
        (result.model, result.input_tokens, result.output_tokens)
        for result in by_model.data[0].results
        if isinstance(result, DataResultOrganizationUsageCompletionsResult)
    ] == [("m-large", 1_000_003, 50_011), ("m-small", 500, 100)]


async def test_paging_with_next_page_until_has_more_is_false_reads_each_bucket_once(
    service: Service, reader: str, db: AsyncEngine
) -> None:
    async with db.begin() as connection:
        # Folded, so that the pages read the rollups as well as what is pending.
        await fold(connection, max_rows=100_000)
    await service.own.post(
        "/v1/events", json=event(at=DAY + timedelta(hours=5, minutes=1), model="m-small")
    )
    usage = service.openai(reader).admin.organization.usage
    start, end = DAY, DAY + timedelta(days=2)
    pages = [
        await usage.completions(
            start_time=seconds(start), end_time=seconds(end), bucket_width="1h", limit=5
        )
    ]
    while pages[-1].has_more:
        cursor = pages[-1].next_page
        assert cursor is not None
        pages.append(
            await usage.completions(
                start_time=seconds(start),
                end_time=seconds(end),
                bucket_width="1h",
                limit=5,
                page=cursor,
            )
        )

    read = [bucket for page in pages for bucket in completions_buckets(page)]
    assert [len(page.data) for page in pages] == [5] * 9 + [3]
    assert pages[-1].next_page is None
    assert read == without_cost(await service.usage(bucket="1h", start=start, end=end))
    assert [start for start, _, _ in read] == list(range(seconds(start), seconds(end), 3600))


async def test_without_end_time_a_read_runs_to_the_bucket_that_holds_now_seven_days_a_page(
    service: Service, reader: str
) -> None:
    usage = service.openai(reader).admin.organization.usage
    start = NOW - timedelta(days=12, hours=3)

    first = await usage.completions(start_time=seconds(start))
    assert first.next_page is not None
    second = await usage.completions(start_time=seconds(start), page=first.next_page)

    midnight = datetime(2026, 11, 15, tzinfo=UTC)
    assert [bucket.start_time for bucket in first.data + second.data] == [
        seconds(midnight + timedelta(days=day)) for day in range(13)
    ]
    assert (len(first.data), first.has_more, second.has_more) == (7, True, False)
    assert second.data[-1].end_time == seconds(datetime(2026, 11, 28, tzinfo=UTC))
    assert [bool(bucket.results) for bucket in second.data] == [False] * 3 + [True] * 3


async def test_a_start_time_inside_a_bucket_counts_the_whole_of_that_bucket(
    service: Service, reader: str
) -> None:
    page = await service.openai(reader).admin.organization.usage.completions(
        start_time=seconds(DAY + timedelta(hours=1, minutes=45)),
        end_time=seconds(DAY + timedelta(hours=2, minutes=1)),
        bucket_width="1h",
    )

    assert completions_buckets(page) == without_cost(
        await service.usage(
            bucket="1h", start=DAY + timedelta(hours=1), end=DAY + timedelta(hours=3)
        )
    )
    assert [len(bucket.results) for bucket in page.data] == [1, 0]


FILTERED = [
    {"models": ["m-large", "m-unpriced"]},
    {"project_ids": ["search"]},
    {"api_key_ids": ["key-a", "key-b"], "models": ["m-small"]},
    {"project_ids": ["nowhere"]},
]


@pytest.mark.parametrize("filters", FILTERED, ids=lambda f: ";".join(f"{k}" for k in f))
async def test_the_plural_filters_narrow_as_tokenpulses_repeated_filters_do(
    service: Service, reader: str, filters: dict[str, Any]
) -> None:
    start, end = DAY, DAY + timedelta(days=3)

    page = await service.openai(reader).admin.organization.usage.completions(
        start_time=seconds(start), end_time=seconds(end), group_by=["model"], **filters
    )

    expected = await service.usage(bucket="1d", start=start, end=end, group_by=["model"], **filters)
    assert completions_buckets(page) == without_cost(expected)
    models = {
        m for _, _, results in completions_buckets(page) for m in [r["model"] for r in results]
    }
    assert models <= set(filters.get("models", models))


async def test_arrays_spelt_plainly_read_as_the_sdks_bracketed_ones(
    service: Service, reader: str
) -> None:
    window = f"start_time={seconds(DAY)}&end_time={seconds(DAY + timedelta(days=3))}"
    headers = {**bearer(reader), "OpenAI-Organization": "acme"}
    asked = {
        spelling: await service.own.get(
            f"/v1/organization/usage/completions?{window}&{query}", headers=headers
        )
        for spelling, query in {
            "plain": "group_by=model&models=m-large&models=m-small",
            "bracketed": "group_by[]=model&models[]=m-large&models%5B%5D=m-small",
            "none": "group_by=model",
        }.items()
    }
    unknown = await service.own.get(
        f"/v1/organization/usage/completions?{window}&sizes[]=1", headers=headers
    )

    assert {name: answer.status_code for name, answer in asked.items()} == dict.fromkeys(asked, 200)
    assert asked["plain"].json() == asked["bracketed"].json()
    assert asked["plain"].json() != asked["none"].json()
    assert unknown.status_code == 422
    assert [problem["field"] for problem in unknown.json()["error"]["errors"]] == ["sizes[]"]


COST_GROUPINGS = [[], ["line_item"], ["line_item", "project_id", "api_key_id", "user_id"]]


@pytest.mark.parametrize("group_by", COST_GROUPINGS, ids=lambda g: ",".join(g) or "ungrouped")
async def test_costs_are_the_exact_cost_the_usage_series_answers_for_each_day(
    service: Service, reader: str, group_by: Any
) -> None:
    costs = service.openai(reader).admin.organization.usage
    start, end = DAY, DAY + timedelta(days=3)

    raw = await costs.with_raw_response.costs(
        start_time=seconds(start), end_time=seconds(end), group_by=group_by
    )
    page = raw.parse()

    expected = await service.usage(bucket="1d", start=start, end=end, group_by=group_by)
    exact = json.loads(raw.text, parse_float=Decimal)
    assert written_costs(exact) == priced(expected, Decimal)
    assert costs_buckets(page) == priced(expected, float)
    assert all(
        isinstance(r["cost"], float) for _, _, results in costs_buckets(page) for r in results
    )
    assert (page.has_more, page.next_page) == (False, None)


async def test_the_cost_of_a_day_is_the_price_of_its_tokens_to_the_last_digit(
    service: Service, reader: str
) -> None:
    raw = await service.openai(reader).admin.organization.usage.with_raw_response.costs(
        start_time=seconds(DAY), end_time=seconds(DAY + timedelta(days=2)), group_by=["line_item"]
    )

    answer = json.loads(raw.text, parse_float=Decimal)
    # Per million tokens, m-large: (1,000,003 - 200,001 - 100,007) * 2.5 + 200,001 * 0.25
    # + 100,007 * 3.125 + (50,011 - 20,003) * 10 + 20,003 * 12.000000000001
    # = 2,652,625.625000020003; m-small: 500 * 0.15 + 100 * 0.6 = 135. The next day, m-large:
    # 1,500 * 2.5 + 500 * 0.25 + 700 * 10 = 10,875; m-unpriced has no price and is left out.
    assert [
        [(r["line_item"], r["amount"]["value"], r["quantity"]) for r in bucket["results"]]
        for bucket in answer["data"]
    ] == [
        [
            ("m-large", Decimal("2.652625625000020003"), 1_050_014),
            ("m-small", Decimal("0.000135"), 600),
        ],
        [("m-large", Decimal("0.010875"), 2_700)],
    ]
    assert '"value":2.652625625000020003,' in raw.text


async def test_costs_of_some_line_items_are_those_models_costs(
    service: Service, reader: str
) -> None:
    start, end = DAY, DAY + timedelta(days=3)

    page = await service.openai(reader).admin.organization.usage.costs(
        start_time=seconds(start),
        end_time=seconds(end),
        line_items=["m-small"],
        group_by=["project_id"],
        limit=2,
    )

    expected = await service.usage(
        bucket="1d", start=start, end=end, group_by=["project_id"], models=["m-small"]
    )
    assert costs_buckets(page) == priced(expected, float)[:2]
    assert [[r["project"] for r in results] for _, _, results in costs_buckets(page)] == [
        ["search"],
        [],
    ]
    assert page.has_more


async def test_a_tenants_key_reads_its_own_tenant_and_no_other(
    service: Service, keys: Keys
) -> None:
    acmes = await keys.create("read", tenant="acme")
    window: dict[str, Any] = {
        "start_time": seconds(DAY),
        "end_time": seconds(DAY + timedelta(days=1)),
    }

    unnamed = await service.openai(acmes, None).admin.organization.usage.completions(**window)
    named = await service.openai(acmes, "acme").admin.organization.usage.completions(**window)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await service.openai(acmes, "globex").admin.organization.usage.completions(**window)
    with pytest.raises(openai.PermissionDeniedError):
        await service.openai(acmes, "globex").admin.organization.usage.costs(**window)

    assert completions_buckets(unnamed) == completions_buckets(named)
    assert completions_buckets(named) == without_cost(
        await service.usage(bucket="1d", start=DAY, end=DAY + timedelta(days=1))
    )
    assert [r["input_tokens"] for r in completions_buckets(named)[0][2]] == [1_000_503]
    assert refused.value.status_code == 403
    assert refused.value.code == "forbidden"


async def test_a_platform_key_reads_the_tenant_the_organization_header_names_and_must_name_one(
    service: Service, reader: str
) -> None:
    window: dict[str, Any] = {
        "start_time": seconds(DAY),
        "end_time": seconds(DAY + timedelta(days=1)),
    }

    globex = await service.openai(reader, "globex").admin.organization.usage.completions(**window)
    with pytest.raises(openai.UnprocessableEntityError) as unnamed:
        await service.openai(reader, None).admin.organization.usage.completions(**window)

    assert completions_buckets(globex) == without_cost(
        await service.usage(bucket="1d", start=DAY, end=DAY + timedelta(days=1), tenant="globex")
    )
    assert [r["input_tokens"] for r in completions_buckets(globex)[0][2]] == [9999]
    assert unnamed.value.status_code == 422
    assert fields_of(unnamed.value) == ["OpenAI-Organization"]
    assert "platform key" in unnamed.value.message


async def test_an_ingest_key_reads_nothing(service: Service, keys: Keys) -> None:
    gateway = await keys.create("ingest", tenant="acme")

    with pytest.raises(openai.PermissionDeniedError):
        await service.openai(gateway).admin.organization.usage.completions(start_time=0)


def fields_of(error: openai.APIStatusError) -> list[str | None]:
    assert isinstance(error.body, dict)
    assert error.body["code"] == "invalid_parameters"
    return [problem["field"] for problem in error.body["errors"]]


START = {"start_time": seconds(DAY)}
REFUSED = [
    ("completions", {**START, "limit": 32}, "limit", "must be 1 to 31 for bucket_width=1d"),
    ("completions", {**START, "bucket_width": "1h", "limit": 169}, "limit", "1 to 168"),
    ("completions", {**START, "bucket_width": "1m", "limit": 0}, "limit", "1 to 1440"),
    ("completions", {**START, "bucket_width": "1w"}, "bucket_width", "must be one of"),
    ("completions", {**START, "end_time": seconds(DAY)}, "end_time", "must be after start_time"),
    ("completions", {"start_time": -1}, "start_time", "Unix seconds"),
    ("completions", {"start_time": seconds(NOW) + 86400 * 2}, "start_time", "after now"),
    ("completions", {**START, "page": "not-a-cursor"}, "page", "is not a next_page"),
    ("completions", {**START, "group_by": ["size"]}, "group_by.0", "must be one of"),
    ("completions", {**START, "user_ids": ["user-1"]}, "user_ids", "no user id"),
    ("completions", {**START, "batch": False}, "batch", "batch jobs"),
    ("completions", {**START, "models": ["m" * 129]}, "models", "1 to 128 characters"),
    ("costs", {**START, "bucket_width": "1h"}, "bucket_width", "must be one of '1d'"),
    ("costs", {**START, "limit": 181}, "limit", "must be 1 to 180"),
    ("costs", {**START, "group_by": ["model"]}, "group_by.0", "must be one of"),
]


@pytest.mark.parametrize(
    ("endpoint", "params", "field", "message"), REFUSED, ids=[f"{e}-{f}" for e, _, f, _ in REFUSED]
)
async def test_a_parameter_tokenpulse_cannot_honour_is_refused_naming_it(
    service: Service, reader: str, endpoint: str, params: dict[str, Any], field: str, message: str
) -> None:
    usage = service.openai(reader).admin.organization.usage

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await (usage.completions if endpoint == "completions" else usage.costs)(**params)

    assert fields_of(refused.value) == [field]
    assert message in refused.value.message


async def test_a_cursor_is_refused_outside_the_range_it_was_given_for(
    service: Service, reader: str
) -> None:
    usage = service.openai(reader).admin.organization.usage
    first = await usage.completions(
        start_time=seconds(DAY), end_time=seconds(DAY + timedelta(days=2)), limit=1
    )
    assert first.next_page is not None

    with pytest.raises(openai.UnprocessableEntityError) as refused:
        await usage.completions(
            start_time=seconds(DAY),
            end_time=seconds(DAY + timedelta(days=1)),
            page=first.next_page,
        )

    assert fields_of(refused.value) == ["page"]
