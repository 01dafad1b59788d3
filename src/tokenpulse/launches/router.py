"""`/v1/launches` and `/v1/milestones`: the HTTP face of launches and milestone crossings."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.convertors import Convertor, register_url_convertor

from tokenpulse.arrival import BodyTimeouts
from tokenpulse.auth import Caller, recheck, require
from tokenpulse.errors import Forbidden, InvalidParameters, NotFound
from tokenpulse.instants import ceil_to, format_rfc3339
from tokenpulse.keys.scopes import Scope
from tokenpulse.launches.milestones import find_crossings
from tokenpulse.launches.store import find_launch, list_launches, put_launch
from tokenpulse.launches.summary import launch_summary
from tokenpulse.openapi import (
    AUTHENTICATED,
    LaunchAnswer,
    LaunchesAnswer,
    LaunchSummaryAnswer,
    MilestoneAnswer,
    answers,
    json_body,
)
from tokenpulse.request_body import read_model
from tokenpulse.rollups.grains import MINUTE
from tokenpulse.rollups.selection import Selection
from tokenpulse.runtime import Runtime, get_runtime
from tokenpulse.text import STRING_MAX, text_problem
from tokenpulse.usage.params import filters, instant, instant_query


class ModelName(Convertor[str]):
    """A model name in a path: all the rest of it, as the server decoded it.

    Names may hold slashes (`meta-llama/Llama-3-70b`), sent as they are or as %2F, which the
    server decodes before routing, and any other character ingest accepts, line breaks included
    (which Starlette's `path` convertor would not match). A route beneath a launch
    (`/v1/launches/{model}/...`) must be declared before the launch routes to be reached.
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette's one registry of convertors, read as routes are compiled; the same name registered
# again replaces it with its equal.
register_url_convertor("model_name", ModelName())

router = APIRouter(tags=["launches"])

LAUNCH_LEAD = timedelta(days=366)

Model = Annotated[str, Path(min_length=1, max_length=STRING_MAX)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
Measure = Literal[
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
]


class LaunchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    launched_at: str


@asynccontextmanager
async def snapshot(runtime: Runtime) -> AsyncIterator[AsyncConnection]:
    """A connection whose reads all see one moment, though events keep arriving meanwhile."""
    async with runtime.engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        yield connection


def stored_until(runtime: Runtime) -> datetime:
    """An instant past every stored event: none may lie further ahead than the accepted lead."""
    ahead = runtime.clock() + runtime.settings.max_event_lead
    return ceil_to(ahead, MINUTE.length) + MINUTE.length


def checked_model(model: str) -> str:
    if (problem := text_problem(model)) is not None:
        raise InvalidParameters.of("model", problem)
    return model


@router.put(
    "/v1/launches/{model:model_name}",
    responses={
        **answers(LaunchAnswer, *AUTHENTICATED, 408, 413, 415, 422),
        201: {"model": LaunchAnswer, "description": "The launch was created."},
    },
    openapi_extra=json_body(LaunchRequest),
)
async def put_model_launch(
    model: Model,
    http_request: Request,
    caller: Annotated[Caller, Depends(require(Scope.ADMIN))],
    runtime: RuntimeDep,
) -> JSONResponse:
    if caller.tenant is not None:
        raise Forbidden("launches concern every tenant: only a platform admin key may set them")
    request = await read_model(http_request, LaunchRequest, BodyTimeouts.of(runtime.settings))
    # A key revoked while the body was arriving changes nothing.
    await recheck(runtime, caller)
    launched_at = instant("launched_at", request.launched_at)
    assert launched_at is not None
    if launched_at > runtime.clock() + LAUNCH_LEAD:
        raise InvalidParameters.of("launched_at", "must not lie more than a year ahead")
    async with runtime.engine.begin() as connection:
        launch, created = await put_launch(connection, checked_model(model), launched_at)
    return JSONResponse(launch.as_json(), status_code=201 if created else 200)


@router.get("/v1/launches", responses=answers(LaunchesAnswer, *AUTHENTICATED))
async def get_launches(
    caller: Annotated[Caller, Depends(require(Scope.READ))], runtime: RuntimeDep
) -> dict[str, Any]:
    async with runtime.engine.connect() as connection:
        launches = await list_launches(connection)
    return {"launches": [launch.as_json() for launch in launches]}


@router.get(
    "/v1/launches/{model:model_name}",
    responses=answers(LaunchSummaryAnswer, *AUTHENTICATED, 404, 422),
)
async def get_launch(
    model: Model,
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    runtime: RuntimeDep,
) -> dict[str, Any]:
    selection = Selection(filters={"model": (checked_model(model),)}).for_tenant(caller.tenant)
    async with snapshot(runtime) as connection:
        launch = await find_launch(connection, model)
        if launch is None:
            raise NotFound("no launch is set for this model; PUT /v1/launches/{model} sets one")
        return await launch_summary(connection, launch, selection, until=stored_until(runtime))


@router.get("/v1/milestones", responses=answers(MilestoneAnswer, *AUTHENTICATED, 422))
async def get_milestones(
    selection: Annotated[Selection, Depends(filters)],
    runtime: RuntimeDep,
    threshold: Annotated[int, Query(ge=1, le=2**63 - 1, description="The sum to reach.")],
    since: Annotated[
        str | None,
        instant_query("Count from here; default: the launch of the one `model` filtered."),
    ] = None,
    metric: Measure = "total_tokens",
) -> dict[str, Any]:
    async with snapshot(runtime) as connection:
        start = instant("since", since) or await _launch_of(connection, selection)
        progress = await find_crossings(
            connection,
            selection,
            measure=metric,
            thresholds=[threshold],
            since=start,
            until=stored_until(runtime),
        )
    crossing = progress.crossings[0]
    crossed_at = crossing.crossed_at
    return {
        "metric": metric,
        "threshold": threshold,
        "since": format_rfc3339(start),
        "reached": crossed_at is not None,
        "crossed_at": None if crossed_at is None else format_rfc3339(crossed_at),
        "event_id": crossing.event_id,
        "seconds_after_since": None if crossed_at is None else (crossed_at - start).total_seconds(),
        "current": progress.current,
    }


async def _launch_of(connection: AsyncConnection, selection: Selection) -> datetime:
    models = selection.filters.get("model", ())
    launch = await find_launch(connection, models[0]) if len(models) == 1 else None
    if launch is None:
        raise InvalidParameters.of(
            "since", "is required unless the model filter names one launched model"
        )
    return launch.launched_at
