"""What `/v1/organization/usage/completions` and `/v1/organization/costs` answer, as
`/openapi.json` describes it: OpenAI's page of buckets, with tokenpulse's figures."""

from typing import Annotated, Literal

from pydantic import Field

from tokenpulse.openapi import Count, Shape

NoData = Annotated[None, Field(description="Always null: tokenpulse's events do not say it.")]
Seconds = Annotated[int, Field(description="Unix seconds.")]


class CompletionsUsageResult(Shape):
    object: Literal["organization.usage.completions.result"]
    input_tokens: Annotated[
        Count, Field(description="Every input token, cached and cache-write ones included.")
    ]
    output_tokens: Annotated[Count, Field(description="Every output token, reasoning included.")]
    input_cached_tokens: Count
    input_cache_write_tokens: Count
    input_uncached_tokens: Annotated[
        Count, Field(description="Input tokens neither cached nor written to a cache.")
    ]
    input_audio_tokens: NoData
    output_audio_tokens: NoData
    num_model_requests: Count
    project_id: Annotated[str | None, Field(description="The project, if grouped by it.")]
    user_id: NoData
    api_key_id: Annotated[
        str | None,
        Field(description="The api_key_id, if grouped by it; null also for events without one."),
    ]
    model: Annotated[str | None, Field(description="The model, if grouped by it.")]
    batch: NoData
    service_tier: NoData
    api_source: NoData


class CompletionsUsageBucket(Shape):
    object: Literal["bucket"]
    start_time: Seconds
    end_time: Seconds
    results: list[CompletionsUsageResult]


class CompletionsUsagePage(Shape):
    object: Literal["page"]
    data: list[CompletionsUsageBucket]
    has_more: bool
    next_page: Annotated[
        str | None, Field(description="The `page` of the next buckets; null on the last page.")
    ]


class CostAmount(Shape):
    value: Annotated[
        float,
        Field(
            description="The exact cost at the prices in effect at each event's minute, as "
            "`/v1/totals` answers it, written as a JSON number with all its digits.",
            examples=[5.118945],
        ),
    ]
    currency: Annotated[str, Field(description="The deployment's currency (TOKENPULSE_CURRENCY).")]


class CostsResult(Shape):
    object: Literal["organization.costs.result"]
    amount: CostAmount
    line_item: Annotated[str | None, Field(description="The model, if grouped by line_item.")]
    project_id: Annotated[str | None, Field(description="The project, if grouped by it.")]
    api_key_id: Annotated[
        str | None,
        Field(description="The api_key_id, if grouped by it; null also for events without one."),
    ]
    user_id: NoData
    api_source: NoData
    quantity: Annotated[
        Count | None,
        Field(description="The line item's tokens, input and output, if grouped by line_item."),
    ]
    quantity_unit: Annotated[
        Literal["tokens"] | None, Field(description="`tokens` if grouped by line_item.")
    ]


class CostsBucket(Shape):
    object: Literal["bucket"]
    start_time: Seconds
    end_time: Seconds
    results: list[CostsResult]


class CostsPage(Shape):
    object: Literal["page"]
    data: list[CostsBucket]
    has_more: bool
    next_page: Annotated[
        str | None, Field(description="The `page` of the next buckets; null on the last page.")
    ]
