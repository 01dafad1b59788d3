"""`/v1/budgets`: setting budgets (admin, own tenant if bound) and checking them (read)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tokenpulse.auth import Authentication, Caller, require
from tokenpulse.budgets.answers import BudgetAnswer, BudgetsAnswer, CheckAnswer
from tokenpulse.budgets.check import check_budgets
from tokenpulse.budgets.rules import (
    METRICS,
    MOST_THRESHOLDS,
    amount_problem,
    percent_problem,
    period_problem,
    since_problem,
    zone_problem,
)
from tokenpulse.budgets.store import BUDGET_ID, Budget, create_budget, delete_budget, list_budgets
from tokenpulse.database import snapshot
from tokenpulse.errors import Forbidden, InvalidParameters, NotFound, Problem
from tokenpulse.instant_input import instant
from tokenpulse.launches.milestones import stored_until
from tokenpulse.openapi import AUTHENTICATED, answers, json_body, needs_key
from tokenpulse.query_string import CheckedQuery
from tokenpulse.request_body import read_model
from tokenpulse.runtime import AppSettings, RequestEngine, Timeouts, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.text import STRING_MAX, storable, text_problem
from tokenpulse.webhooks.store import BUDGET_CROSSED, WEBHOOK_ID, notifiable_webhook

router = APIRouter(tags=["budgets"], route_class=CheckedQuery)
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]


Name = Annotated[str, Field(min_length=1, max_length=STRING_MAX), AfterValidator(storable)]


class BudgetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    tenant: Name | None = None
    project: Name | None = None
    model: Name | None = None
    api_key_id: Name | None = None
    metric: str = Field(default="total_tokens", description=f"One of {', '.join(METRICS)}.")
    limit: str | int = Field(
        description="For a measure a positive integer, for cost an amount of the currency as a "
        "decimal string."
    )
    window: str = Field(description="day, week or month in `tz`, or since (with `since`).")
    tz: str = Field(default="UTC", max_length=64, description="An IANA time zone.")
    since: str | None = None
    thresholds: list[int | float] = Field(
        default=[100], max_length=MOST_THRESHOLDS, description="Percentages of `limit`."
    )
    amounts: list[str | int] = Field(
        default=[], max_length=MOST_THRESHOLDS, description="Absolute values of `metric`."
    )
    webhook_id: Name | None = None


def _draft(request: BudgetRequest, tenant: str, now: datetime) -> Budget:
    """The budget `request` asks for, or a 422 listing every field at fault."""
    problems: list[Problem] = []
    metric = request.metric
    if metric not in METRICS:
        raise InvalidParameters.of("metric", f"must be one of {', '.join(METRICS)}")
    if (problem := amount_problem(metric, request.limit)) is not None:
        problems.append(Problem("limit", problem))
    if (problem := period_problem(request.window)) is not None:
        problems.append(Problem("window", problem))
    if (problem := zone_problem(request.tz)) is not None:
        problems.append(Problem("tz", problem))
    since = instant("since", request.since)
    if (since_wrong := since_problem(request.window, since)) is not None:
        problems.append(since_wrong)
    for index, percent in enumerate(request.thresholds):
        if (problem := percent_problem(percent)) is not None:
            problems.append(Problem(f"thresholds[{index}]", problem))
    for index, amount in enumerate(request.amounts):
        if (problem := amount_problem(metric, amount)) is not None:
            problems.append(Problem(f"amounts[{index}]", problem))
    if not request.thresholds and not request.amounts:
        problems.append(Problem("thresholds", "give at least one threshold or amount"))
    if len(request.thresholds) + len(request.amounts) > MOST_THRESHOLDS:
        problems.append(
            Problem("thresholds", f"at most {MOST_THRESHOLDS} thresholds and amounts in all")
        )
    if problems:
        raise InvalidParameters.listing(problems)
    return Budget(
        id="",
        tenant=tenant,
        project=request.project,
        model=request.model,
        api_key_id=request.api_key_id,
        metric=metric,
        limit=Decimal(request.limit),
        period=request.window,
        tz=request.tz,
        since=since,
        percents=tuple(Decimal(str(percent)) for percent in request.thresholds),
        amounts=tuple(Decimal(amount) for amount in request.amounts),
        webhook_id=request.webhook_id,
        created_at=now,
    )


def _tenant_of(caller: Caller, asked: str | None, what: str) -> str | None:
    """The tenant `caller` may name: its own, if bound to one."""
    if caller.tenant is None:
        return asked
    if asked not in (None, caller.tenant):
        raise Forbidden(f"a tenant-bound key {what} its own tenant only")
    return caller.tenant


@router.post(
    "/v1/budgets",
    operation_id="createBudget",
    summary="Create a budget",
    description="Watches a tenant's running sum of a measure or of cost over a window (a day, "
    "week or month in a time zone, or since an instant) and notifies its webhook once at each "
    "threshold it crosses, with the exact crossing event. A tenant's admin key makes budgets "
    "for its own tenant only.",
    status_code=201,
    responses=answers(BudgetAnswer, *AUTHENTICATED, 404, 408, 413, 415, 422, status=201),
    openapi_extra=json_body(BudgetRequest) | needs_key(Scope.ADMIN),
)
async def post_budget(
    http_request: Request,
    caller: Admin,
    authentication: Authentication,
    timeouts: Timeouts,
    engine: RequestEngine,
    clock: WallClock,
) -> JSONResponse:
    request = await read_model(http_request, BudgetRequest, timeouts)
    await authentication.recheck(caller)
    tenant = _tenant_of(caller, request.tenant, "makes budgets for")
    if tenant is None:
        raise InvalidParameters.of("tenant", "is required with a platform key")
    draft = _draft(request, tenant, clock())
    async with engine.begin() as connection:
        if draft.webhook_id is not None and (
            not WEBHOOK_ID.fullmatch(draft.webhook_id)
            or await notifiable_webhook(
                connection, draft.webhook_id, tenant=tenant, platform=caller.tenant is None
            )
            is None
        ):
            raise NotFound(
                "there is no webhook of this tenant (or, for a platform key, a platform one) "
                "that receives "
                f"{BUDGET_CROSSED}"
            )
        made = await create_budget(connection, draft)
    return JSONResponse(made.as_json(), status_code=201)


@router.get(
    "/v1/budgets",
    operation_id="listBudgets",
    summary="List budgets",
    description="Every budget, or one tenant's (a tenant's admin key: its own), oldest first.",
    responses=answers(BudgetsAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def get_budgets(
    caller: Admin,
    engine: RequestEngine,
    tenant: Annotated[str | None, Query(description="Only this tenant's budgets.")] = None,
) -> dict[str, Any]:
    if tenant is not None and (problem := _name_problem(tenant)) is not None:
        raise InvalidParameters.of("tenant", problem)
    async with engine.connect() as connection:
        budgets = await list_budgets(
            connection, tenant=_tenant_of(caller, tenant, "lists budgets of")
        )
    return {"budgets": [budget.as_json() for budget in budgets]}


@router.delete(
    "/v1/budgets/{budget_id}",
    operation_id="deleteBudget",
    summary="Delete a budget",
    description="Its notifications stop; those made stay listed. A tenant's admin key deletes "
    "its own tenant's budgets only.",
    responses=answers(BudgetAnswer, *AUTHENTICATED, 404),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def remove_budget(
    budget_id: str, caller: Admin, engine: RequestEngine, clock: WallClock
) -> dict[str, Any]:
    if not BUDGET_ID.fullmatch(budget_id):
        raise NotFound("there is no such budget")
    async with engine.begin() as connection:
        deleted = await delete_budget(connection, budget_id, tenant=caller.tenant, now=clock())
    if deleted is None:
        raise NotFound("there is no such budget")
    return deleted.as_json()


@router.get(
    "/v1/budgets/check",
    operation_id="checkBudgets",
    summary="Check a tenant's budgets",
    description="For a call about to be made (a tenant, and maybe its project, model and api "
    "key id): every budget of the tenant that applies to it, each dimension the budget names "
    "being the call's, with its limit, what its current window has used so far, what remains "
    "and whether it is exceeded. Exact, and counting every event acknowledged before it.",
    responses=answers(CheckAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_check(
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    engine: RequestEngine,
    clock: WallClock,
    settings: AppSettings,
    tenant: Annotated[
        str | None, Query(description="Required unless the key is bound to a tenant.")
    ] = None,
    project: Annotated[str | None, Query()] = None,
    model: Annotated[str | None, Query()] = None,
    api_key_id: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    checked = _tenant_of(caller, tenant, "checks budgets of")
    if checked is None:
        raise InvalidParameters.of("tenant", "is required with a platform key")
    call = {"project": project, "model": model, "api_key_id": api_key_id}
    problems = [
        Problem(name, problem)
        for name, value in {"tenant": checked, **call}.items()
        if value is not None and (problem := _name_problem(value)) is not None
    ]
    if problems:
        raise InvalidParameters.listing(problems)
    now = clock()
    async with snapshot(engine) as connection:
        return await check_budgets(
            connection,
            checked,
            call,
            now=now,
            until=stored_until(now, settings.max_event_lead),
        )


def _name_problem(value: str) -> str | None:
    if not value or len(value) > STRING_MAX:
        return f"must be 1 to {STRING_MAX} characters"
    return text_problem(value)
