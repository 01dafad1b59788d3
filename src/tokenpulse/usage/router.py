"""`GET /v1/usage` and `GET /v1/totals`: the HTTP face of the aggregates."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from tokenpulse.instant_input import instant
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.query_string import CheckedQuery, instant_query
from tokenpulse.runtime import AppSettings, DashboardReads, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.usage.answers import TotalsAnswer, UsageAnswer
from tokenpulse.usage.params import ReaderSelection
from tokenpulse.usage.series import Buckets, parse_zone, usage_series
from tokenpulse.usage.totals import totals_range, usage_totals

router = APIRouter(tags=["aggregates"], route_class=CheckedQuery)


@router.get(
    "/v1/usage",
    operation_id="getUsage",
    summary="Usage over time",
    description="The seven measures of each bucket (`1m`, `1h`, or `1d` in `tz`) from `start` to "
    "`end`, every bucket present and in order, grouped by `group_by` and narrowed by the "
    "filters. `start` and `end` lie on bucket boundaries. A tenant's key sees its tenant only.",
    responses=answers(UsageAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_usage(
    chosen: ReaderSelection,
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
    start: Annotated[str, instant_query("First bucket's start, on a bucket boundary.")],
    end: Annotated[str | None, instant_query("Last bucket's end (exclusive).")] = None,
    bucket: Literal["1m", "1h", "1d"] = "1d",
    tz: Annotated[str, Query(description="IANA time zone of 1d buckets.")] = "UTC",
) -> dict[str, Any]:
    buckets = Buckets(bucket, parse_zone(tz))
    first = instant("start", start)
    assert first is not None
    async with reads.snapshot() as connection:
        return await usage_series(
            connection,
            chosen,
            buckets=buckets,
            start=first,
            end=instant("end", end),
            now=clock(),
            max_results=settings.max_series_results,
        )


@router.get(
    "/v1/totals",
    operation_id="getTotals",
    summary="Totals",
    description="The seven measures and the cost of each group over `start` to `end` or the "
    "last `window`, to the minute: the answer says which range was counted. A tenant's key sees "
    "its tenant only.",
    responses=answers(TotalsAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_totals(
    chosen: ReaderSelection,
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
    start: Annotated[str | None, instant_query("Range start, floored to the minute.")] = None,
    end: Annotated[str | None, instant_query("Range end (default now), raised.")] = None,
    window: Literal["5m", "1h", "24h", "7d", "30d"] | None = None,
) -> dict[str, Any]:
    counted_start, counted_end = totals_range(
        start=instant("start", start),
        end=instant("end", end),
        window=window,
        now=clock(),
    )
    async with reads.snapshot() as connection:
        return await usage_totals(
            connection,
            chosen,
            start=counted_start,
            end=counted_end,
            max_groups=settings.max_groups,
        )
