"""What `GET /v1/usage` and `GET /v1/totals` answer, as `/openapi.json` describes it."""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from tokenpulse.openapi import Count, Shape

Cost = Annotated[
    str | None,
    Field(
        description="What the tokens cost at the prices in effect at each event's minute, in "
        "the deployment's currency, an exact decimal string; null when none of the events' "
        "models has a price in effect.",
        examples=["14.488223975000040006"],
    ),
]


class Measures(Shape):
    requests: Count
    input_tokens: Count
    cached_input_tokens: Count
    cache_write_input_tokens: Count
    output_tokens: Count
    reasoning_tokens: Count
    total_tokens: Count
    cost: Cost


class GroupMeasures(Measures):
    """The seven measures and the cost of one group; only the group keys asked for are present."""

    tenant: str | None = None
    project: str | None = None
    model: str | None = None
    api_key_id: str | None = None


class TotalsAnswer(Shape):
    start: datetime
    end: datetime
    results: list[GroupMeasures]


class UsageBucket(Shape):
    start: datetime
    end: datetime
    results: list[GroupMeasures]


class UsageAnswer(Shape):
    bucket: str
    start: datetime
    end: datetime
    data: list[UsageBucket]
