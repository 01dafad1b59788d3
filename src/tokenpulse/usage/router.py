"""`GET /v1/usage` and `GET /v1/totals`: the HTTP face of the aggregates."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from tokenpulse.openapi import AUTHENTICATED, TotalsAnswer, UsageAnswer, answers
from tokenpulse.rollups.selection import Selection
from tokenpulse.runtime import Runtime, get_runtime
from tokenpulse.usage.params import instant, instant_query, selection
from tokenpulse.usage.series import Buckets, parse_zone, usage_series
from tokenpulse.usage.totals import totals_range, usage_totals

router = APIRouter(tags=["aggregates"])


@router.get("/v1/usage", responses=answers(UsageAnswer, *AUTHENTICATED, 422))
async def get_usage(
    chosen: Annotated[Selection, Depends(selection)],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    start: Annotated[str, instant_query("First bucket's start, on a bucket boundary.")],
    end: Annotated[str | None, instant_query("Last bucket's end (exclusive).")] = None,
    bucket: Literal["1m", "1h", "1d"] = "1d",
    tz: Annotated[str, Query(description="IANA time zone of 1d buckets.")] = "UTC",
) -> dict[str, Any]:
    buckets = Buckets(bucket, parse_zone(tz))
    first = instant("start", start)
    assert first is not None
    async with runtime.engine.connect() as connection:
        return await usage_series(
            connection,
            chosen,
            buckets=buckets,
            start=first,
            end=instant("end", end),
            now=runtime.clock(),
            max_results=runtime.settings.max_series_results,
        )


@router.get("/v1/totals", responses=answers(TotalsAnswer, *AUTHENTICATED, 422))
async def get_totals(
    chosen: Annotated[Selection, Depends(selection)],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    start: Annotated[str | None, instant_query("Range start, floored to the minute.")] = None,
    end: Annotated[str | None, instant_query("Range end (default now), raised.")] = None,
    window: Literal["5m", "1h", "24h", "7d", "30d"] | None = None,
) -> dict[str, Any]:
    counted_start, counted_end = totals_range(
        start=instant("start", start),
        end=instant("end", end),
        window=window,
        now=runtime.clock(),
    )
    async with runtime.engine.connect() as connection:
        return await usage_totals(
            connection,
            chosen,
            start=counted_start,
            end=counted_end,
            max_groups=runtime.settings.max_groups,
        )
