"""What `GET /v1/usage` and `GET /v1/totals` answer, as `/openapi.json` describes it."""

from datetime import datetime

from tokenpulse.openapi import Count, Shape


class Measures(Shape):
    requests: Count
    input_tokens: Count
    cached_input_tokens: Count
    cache_write_input_tokens: Count
    output_tokens: Count
    reasoning_tokens: Count
    total_tokens: Count


class GroupMeasures(Measures):
    """The seven measures of one group; only the group keys asked for are present."""

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
