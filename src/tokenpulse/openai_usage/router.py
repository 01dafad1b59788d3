"""`GET /v1/organization/usage/completions` and `GET /v1/organization/costs`: the HTTP face of
OpenAI's Usage and Costs APIs."""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Response

from tokenpulse.auth import Caller, require
from tokenpulse.openai_usage.answers import CompletionsUsagePage, CostsPage
from tokenpulse.openai_usage.completions import completions_page, completions_selection
from tokenpulse.openai_usage.costs import costs_page, costs_selection
from tokenpulse.openai_usage.exact_json import exact_json
from tokenpulse.openai_usage.organization import ORGANIZATION_HEADER, organization_of
from tokenpulse.openai_usage.pages import COMPLETIONS_LIMITS, COSTS_LIMITS, limits_text, page_of
from tokenpulse.openai_usage.query_arrays import OpenAIQuery
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.runtime import READ_FROM_HEADER, AppSettings, DashboardReads, WallClock
from tokenpulse.scopes import Scope

router = APIRouter(tags=["openai"], route_class=OpenAIQuery)

CompletionsGroup = Literal[
    "project_id", "user_id", "api_key_id", "model", "batch", "service_tier", "api_source"
]
CostsGroup = Literal["project_id", "user_id", "line_item", "api_key_id", "api_source"]


async def organization(
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    named: Annotated[
        str | None,
        Header(
            alias=ORGANIZATION_HEADER,
            description="The tenant to read; required with a platform key, and with a tenant's "
            "key its own or left out.",
        ),
    ] = None,
) -> str:
    return organization_of(caller.tenant, named)


Organization = Annotated[str, Depends(organization)]
"""The tenant a caller whose key may read reads: a route taking it needs that key."""

StartTime = Annotated[
    int,
    Query(
        description="Unix seconds; the bucket that holds it is the first counted (buckets are "
        "whole UTC minutes, hours or days)."
    ),
]
EndTime = Annotated[
    int | None,
    Query(
        description="Unix seconds, exclusive; the bucket that holds the second before it is the "
        "last counted. Default: the end of the bucket that holds now."
    ),
]
Limit = Annotated[
    int | None, Query(description="Buckets a page holds; its default and most depend on the width.")
]
Cursor = Annotated[str | None, Query(description="The `next_page` of the page before.")]


def array_query(description: str) -> Any:
    return Query(description=f"{description} Repeat for several, as `name=` or `name[]=`.")


@router.get(
    "/v1/organization/usage/completions",
    operation_id="getCompletionsUsage",
    summary="Completions usage, OpenAI-compatible",
    description="Usage per bucket in the shape, parameters, limits and paging of OpenAI's "
    "completions Usage API, for the tenant the key reads (OpenAI's organization). `limit` is "
    f"{limits_text(COMPLETIONS_LIMITS)}. `user_ids` and `batch` are refused: events carry "
    "neither.",
    responses=answers(CompletionsUsagePage, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_completions_usage(
    tenant: Organization,
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
    start_time: StartTime,
    end_time: EndTime = None,
    bucket_width: Literal["1m", "1h", "1d"] = "1d",
    group_by: Annotated[
        list[CompletionsGroup] | None,
        array_query("Fields to group by; user_id, batch, service_tier and api_source answer null."),
    ] = None,
    project_ids: Annotated[list[str] | None, array_query("Only these projects.")] = None,
    api_key_ids: Annotated[list[str] | None, array_query("Only these api_key_ids.")] = None,
    models: Annotated[list[str] | None, array_query("Only these models.")] = None,
    user_ids: Annotated[list[str] | None, array_query("Refused: events carry no user id.")] = None,
    batch: Annotated[bool | None, Query(description="Refused: events do not say it.")] = None,
    limit: Limit = None,
    page: Cursor = None,
) -> dict[str, Any]:
    selection = completions_selection(
        tenant,
        group_by or (),
        {"project_ids": project_ids, "api_key_ids": api_key_ids, "models": models},
        user_ids=user_ids,
        batch=batch,
    )
    chosen = page_of(
        bucket_width=bucket_width,
        start_time=start_time,
        end_time=end_time,
        limit=limit,
        page=page,
        limits=COMPLETIONS_LIMITS,
        now=clock(),
    )
    async with reads.snapshot() as connection:
        return await completions_page(
            connection, selection, chosen, most=settings.max_series_results
        )


@router.get(
    "/v1/organization/costs",
    operation_id="getCosts",
    summary="Costs, OpenAI-compatible",
    description="Cost per day in the shape, parameters, limits and paging of OpenAI's Costs API, "
    "for the tenant the key reads (OpenAI's organization): the exact figure `/v1/totals` "
    "answers, as a JSON number with all its digits. A line item is a model. `limit` is "
    f"{limits_text(COSTS_LIMITS)}. Groups of no priced model are left out.",
    responses=answers(CostsPage, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_costs(
    tenant: Organization,
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
    start_time: StartTime,
    end_time: EndTime = None,
    bucket_width: Literal["1d"] = "1d",
    group_by: Annotated[
        list[CostsGroup] | None,
        array_query("Fields to group by; user_id and api_source answer null."),
    ] = None,
    project_ids: Annotated[list[str] | None, array_query("Only these projects.")] = None,
    api_key_ids: Annotated[list[str] | None, array_query("Only these api_key_ids.")] = None,
    line_items: Annotated[list[str] | None, array_query("Only these line items (models).")] = None,
    limit: Limit = None,
    page: Cursor = None,
) -> Response:
    selection = costs_selection(
        tenant,
        group_by or (),
        {"project_ids": project_ids, "api_key_ids": api_key_ids, "line_items": line_items},
    )
    chosen = page_of(
        bucket_width=bucket_width,
        start_time=start_time,
        end_time=end_time,
        limit=limit,
        page=page,
        limits=COSTS_LIMITS,
        now=clock(),
    )
    async with reads.snapshot() as connection:
        answer = await costs_page(
            connection,
            selection,
            chosen,
            currency=settings.currency,
            most=settings.max_series_results,
        )
    return Response(
        exact_json(answer),
        media_type="application/json",
        headers={READ_FROM_HEADER: reads.source},
    )
