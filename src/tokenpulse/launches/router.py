"""`/v1/launches` and `/v1/milestones`: the HTTP face of launches and milestone crossings."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.auth import Authentication, Caller, platform_admin, require
from tokenpulse.errors import InvalidParameters, NotFound
from tokenpulse.instant_input import instant
from tokenpulse.instants import format_rfc3339
from tokenpulse.launches.answers import (
    LaunchAnswer,
    LaunchesAnswer,
    LaunchSummaryAnswer,
    MilestoneAnswer,
)
from tokenpulse.launches.milestones import find_crossings, stored_until
from tokenpulse.launches.rules import launched_at_problem
from tokenpulse.launches.store import delete_launch, find_launch, list_launches, put_launch
from tokenpulse.launches.summary import launch_summary
from tokenpulse.launches.thresholds import answered_sum, parsed_threshold
from tokenpulse.model_path import Model, checked_model
from tokenpulse.openapi import AUTHENTICATED, answers, error_responses, json_body, needs_key
from tokenpulse.query_string import CheckedQuery, instant_query
from tokenpulse.request_body import read_model
from tokenpulse.rollups.selection import Selection
from tokenpulse.runtime import AppSettings, DashboardReads, RequestEngine, Timeouts, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.usage.params import ReaderFilters

router = APIRouter(tags=["launches"], route_class=CheckedQuery)

Measure = Literal[
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
    "cost",
]


class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    launched_at: str


@router.put(
    "/v1/launches/{model:model_name}",
    operation_id="setLaunch",
    summary="Set a model's launch",
    description="Creates (201) or moves (200) the launch of `model`, from which its milestones "
    "are counted. Launches concern every tenant: only a platform key, bound to no tenant, may "
    "set them.",
    responses={
        **answers(LaunchAnswer, *AUTHENTICATED, 408, 413, 415, 422),
        201: {"model": LaunchAnswer, "description": "The launch was created."},
    },
    openapi_extra=json_body(LaunchRequest) | needs_key(Scope.ADMIN),
)
async def put_model_launch(
    model: Model,
    http_request: Request,
    caller: Annotated[Caller, Depends(require(Scope.ADMIN))],
    authentication: Authentication,
    timeouts: Timeouts,
    clock: WallClock,
    engine: RequestEngine,
) -> JSONResponse:
    platform_admin(caller, "launches")
    request = await read_model(http_request, LaunchRequest, timeouts)
    # A key revoked while the body was arriving changes nothing.
    await authentication.recheck(caller)
    launched_at = instant("launched_at", request.launched_at)
    assert launched_at is not None
    if (problem := launched_at_problem(launched_at, clock())) is not None:
        raise InvalidParameters.of("launched_at", problem)
    async with engine.begin() as connection:
        launch, created = await put_launch(connection, checked_model(model), launched_at)
    return JSONResponse(launch.as_json(), status_code=201 if created else 200)


@router.delete(
    "/v1/launches/{model:model_name}",
    operation_id="deleteLaunch",
    summary="Delete a model's launch",
    description="Deletes the launch of `model`: it is no longer listed and its summary answers "
    "404. Its events stay and are counted as before; its milestones, always counted from them, "
    "are back as they were should the launch be set again. Only a platform key, bound to no "
    "tenant, may delete one.",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "The launch was deleted."},
        **error_responses(*AUTHENTICATED, 404, 422),
    },
    openapi_extra=needs_key(Scope.ADMIN),
)
async def delete_model_launch(
    model: Model,
    caller: Annotated[Caller, Depends(require(Scope.ADMIN))],
    engine: RequestEngine,
) -> Response:
    platform_admin(caller, "launches")
    async with engine.begin() as connection:
        deleted = await delete_launch(connection, checked_model(model))
    if deleted is None:
        raise NotFound("no launch is set for this model")
    return Response(status_code=204)


@router.get(
    "/v1/launches",
    operation_id="listLaunches",
    summary="List launches",
    description="Every launch: its model and the instant it went live.",
    responses=answers(LaunchesAnswer, *AUTHENTICATED),
    openapi_extra=needs_key(Scope.READ),
)
async def get_launches(
    caller: Annotated[Caller, Depends(require(Scope.READ))], engine: RequestEngine
) -> dict[str, Any]:
    async with engine.connect() as connection:
        launches = await list_launches(connection)
    return {"launches": [launch.as_json() for launch in launches]}


@router.get(
    "/v1/launches/{model:model_name}",
    operation_id="getLaunch",
    summary="A launch's summary",
    description="The model's seven measures since its launch and over its first 24 hours, its "
    "busiest minute, and when each default milestone (10^9 to 10^12 total tokens) was crossed, "
    "by which event. A tenant's key sees its tenant's usage only.",
    responses=answers(LaunchSummaryAnswer, *AUTHENTICATED, 404, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_launch(
    model: Model,
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
) -> dict[str, Any]:
    selection = Selection(filters={"model": (checked_model(model),)}).for_tenant(caller.tenant)
    async with reads.snapshot() as connection:
        launch = await find_launch(connection, model)
        if launch is None:
            raise NotFound("no launch is set for this model; PUT /v1/launches/{model} sets one")
        return await launch_summary(
            connection, launch, selection, until=stored_until(clock(), settings.max_event_lead)
        )


@router.get(
    "/v1/milestones",
    operation_id="getMilestone",
    summary="When a running sum reached a threshold",
    description="Whether, when and by which event the running sum of `metric` over the "
    "filtered events since `since` reached `threshold`, and the sum now. `since` may be left "
    "out when the `model` filter names one launched model: it is then that launch. A tenant's "
    "key sees its tenant's usage only.",
    responses=answers(MilestoneAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_milestones(
    selection: ReaderFilters,
    reads: DashboardReads,
    clock: WallClock,
    settings: AppSettings,
    threshold: Annotated[
        str,
        Query(
            description="The sum to reach: a count from 1 to 2^63 - 1, or for `metric=cost` an "
            'amount in the deployment\'s currency, a decimal string such as "1000000" or "0.50".',
        ),
    ],
    since: Annotated[
        str | None,
        instant_query("Count from here; default: the launch of the one `model` filtered."),
    ] = None,
    metric: Measure = "total_tokens",
) -> dict[str, Any]:
    sought = parsed_threshold(metric, threshold)
    async with reads.snapshot() as connection:
        start = instant("since", since) or await _launch_of(connection, selection)
        progress = await find_crossings(
            connection,
            selection,
            measure=metric,
            thresholds=[sought],
            since=start,
            until=stored_until(clock(), settings.max_event_lead),
        )
    crossing = progress.crossings[0]
    crossed_at = crossing.crossed_at
    return {
        "metric": metric,
        "threshold": answered_sum(sought),
        "since": format_rfc3339(start),
        "reached": crossed_at is not None,
        "crossed_at": None if crossed_at is None else format_rfc3339(crossed_at),
        "event_id": crossing.event_id,
        "seconds_after_since": None if crossed_at is None else (crossed_at - start).total_seconds(),
        "current": answered_sum(progress.current),
    }


async def _launch_of(connection: AsyncConnection, selection: Selection) -> datetime:
    models = selection.filters.get("model", ())
    launch = await find_launch(connection, models[0]) if len(models) == 1 else None
    if launch is None:
        raise InvalidParameters.of(
            "since", "is required unless the model filter names one launched model"
        )
    return launch.launched_at
