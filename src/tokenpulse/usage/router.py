"""`GET /v1/usage` and `GET /v1/totals`: the HTTP face of the aggregates."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query

from tokenpulse.auth import Caller, require
from tokenpulse.errors import InvalidParameters
from tokenpulse.instants import parse_rfc3339, rfc3339_problem
from tokenpulse.keys.scopes import Scope
from tokenpulse.runtime import Runtime, get_runtime
from tokenpulse.usage.aggregate import Selection, parse_selection
from tokenpulse.usage.series import Buckets, parse_zone, usage_series
from tokenpulse.usage.totals import totals_range, usage_totals

router = APIRouter(tags=["aggregates"])

Filter = Annotated[
    list[str] | None, Query(description="Keep only these values; repeat to allow several.")
]


def selection(
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    group_by: Annotated[
        str | None,
        Query(description="Comma-separated subset of tenant, project, model, api_key_id."),
    ] = None,
    tenant: Filter = None,
    project: Filter = None,
    model: Filter = None,
    api_key_id: Filter = None,
) -> Selection:
    """The common aggregate parameters, narrowed to the caller's tenant for a tenant-bound key."""
    filters = {"tenant": tenant, "project": project, "model": model, "api_key_id": api_key_id}
    chosen = parse_selection(group_by, {name: v for name, v in filters.items() if v is not None})
    return chosen.for_tenant(caller.tenant)


def instant(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    # An unescaped '+' in a query string arrives as a space: "…T00:00:00 01:00".
    if len(value) > 6 and value[-6] == " " and value[-3] == ":":
        value = value[:-6] + "+" + value[-5:]
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise InvalidParameters.of(name, rfc3339_problem(value))
    return parsed


@router.get("/v1/usage")
async def get_usage(
    chosen: Annotated[Selection, Depends(selection)],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    start: Annotated[str, Query(description="First bucket's start, on a bucket boundary.")],
    end: Annotated[str | None, Query(description="Last bucket's end (exclusive).")] = None,
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
        )


@router.get("/v1/totals")
async def get_totals(
    chosen: Annotated[Selection, Depends(selection)],
    runtime: Annotated[Runtime, Depends(get_runtime)],
    start: Annotated[str | None, Query(description="Range start, floored to the minute.")] = None,
    end: Annotated[str | None, Query(description="Range end (default now), raised.")] = None,
    window: Literal["5m", "1h", "24h", "7d", "30d"] | None = None,
) -> dict[str, Any]:
    counted_start, counted_end = totals_range(
        start=instant("start", start),
        end=instant("end", end),
        window=window,
        now=runtime.clock(),
    )
    async with runtime.engine.connect() as connection:
        return await usage_totals(connection, chosen, start=counted_start, end=counted_end)
