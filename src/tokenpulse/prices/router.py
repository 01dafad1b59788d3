"""`/v1/prices`: the HTTP face of price versions."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, WithJsonSchema

from tokenpulse.auth import Authentication, Caller, platform_admin, require
from tokenpulse.errors import Conflict, InvalidParameters, NotFound
from tokenpulse.instant_input import instant
from tokenpulse.model_path import Model, checked_model
from tokenpulse.openapi import AUTHENTICATED, answers, json_body, needs_key
from tokenpulse.prices.answers import PricesAnswer, PriceVersionAnswer, PutPriceAnswer
from tokenpulse.prices.rules import (
    PRICE_PATTERN,
    Prices,
    checked_prices,
    effective_from_problem,
    price_problem,
)
from tokenpulse.prices.store import (
    OtherPricesInEffect,
    Outcome,
    analyze_prices,
    list_prices,
    put_price,
    withdraw_price,
)
from tokenpulse.query_string import CheckedQuery, instant_query
from tokenpulse.request_body import read_model
from tokenpulse.runtime import AppSettings, RequestEngine, Timeouts
from tokenpulse.scopes import Scope

router = APIRouter(tags=["prices"], route_class=CheckedQuery)


def _price(text: str) -> str:
    if (problem := price_problem(text)) is not None:
        raise ValueError(problem)
    return text


PriceText = Annotated[
    str,
    AfterValidator(_price),
    WithJsonSchema({"type": "string", "pattern": PRICE_PATTERN, "examples": ["2.50"]}),
]


class PriceParts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    input: PriceText
    cached_input: PriceText | None = None
    cache_write_input: PriceText | None = None
    output: PriceText
    reasoning: PriceText | None = None


class PriceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    effective_from: str
    per_million_tokens: PriceParts


@router.put(
    "/v1/prices/{model:model_name}",
    operation_id="setPrice",
    summary="Set a model's prices from a minute",
    description="Puts a price version in effect for `model` from `effective_from` (a whole "
    "minute) until its next version. Prices are decimal strings per million tokens in the "
    "deployment's currency; `input` prices uncached input, and cached input and cache writes "
    "left out cost what it does, reasoning left out what output does. 201: a new version. "
    "200: the same prices were in effect from that minute already (`unchanged`), or, with "
    "`replace=true`, other prices were and now are no more (`replaced`, the version they were). "
    "Other prices in effect from that minute without `replace=true` are a 409. Only a platform "
    "key, bound to no tenant, may set prices.",
    responses={
        **answers(PutPriceAnswer, *AUTHENTICATED, 408, 409, 413, 415, 422),
        201: {"model": PutPriceAnswer, "description": "A new version is in effect."},
    },
    openapi_extra=json_body(PriceRequest) | needs_key(Scope.ADMIN),
)
async def put_model_price(
    model: Model,
    http_request: Request,
    caller: Annotated[Caller, Depends(require(Scope.ADMIN))],
    authentication: Authentication,
    timeouts: Timeouts,
    settings: AppSettings,
    engine: RequestEngine,
    replace: Annotated[
        bool,
        Query(description="Replace other prices in effect from the same minute."),
    ] = False,
) -> JSONResponse:
    platform_admin(caller, "prices")
    request = await read_model(http_request, PriceRequest, timeouts)
    await authentication.recheck(caller)
    effective_from = instant("effective_from", request.effective_from)
    assert effective_from is not None
    if (problem := effective_from_problem(effective_from)) is not None:
        raise InvalidParameters.of("effective_from", problem)
    prices = checked_prices(request.per_million_tokens.model_dump(exclude_none=True))
    if not isinstance(prices, Prices):
        raise InvalidParameters.listing(prices)
    try:
        async with engine.begin() as connection:
            version, outcome, replaced = await put_price(
                connection, checked_model(model), effective_from, prices, replace=replace
            )
            if outcome is not Outcome.UNCHANGED:
                await analyze_prices(connection)
    except OtherPricesInEffect as conflict:
        raise Conflict(
            f"version {conflict.version.id} of this model's prices is in effect from "
            f"{request.effective_from} with other prices; send replace=true to replace it"
        ) from None
    answer = {
        **version.as_json(settings.currency),
        "outcome": outcome.value,
        "replaced": None if replaced is None else replaced.as_json(settings.currency),
    }
    return JSONResponse(answer, status_code=201 if outcome is Outcome.CREATED else 200)


@router.delete(
    "/v1/prices/{model:model_name}",
    operation_id="withdrawPrice",
    summary="Withdraw one of a model's price versions",
    description="Ends the version of `model` in effect from `effective_from`: from then on, the "
    "version before it applies until the next one, and costs are answered so. The version stays "
    "listed with `ended=true`, with when it ended. Only a platform key may withdraw prices.",
    responses=answers(PriceVersionAnswer, *AUTHENTICATED, 404, 422),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def withdraw_model_price(
    model: Model,
    caller: Annotated[Caller, Depends(require(Scope.ADMIN))],
    settings: AppSettings,
    engine: RequestEngine,
    effective_from: Annotated[str, instant_query("The minute the version is in effect from.")],
) -> dict[str, Any]:
    platform_admin(caller, "prices")
    start = instant("effective_from", effective_from)
    assert start is not None
    async with engine.begin() as connection:
        withdrawn = await withdraw_price(connection, checked_model(model), start)
        if withdrawn is not None:
            await analyze_prices(connection)
    if withdrawn is None:
        raise NotFound("no version of this model's prices is in effect from that minute")
    return withdrawn.as_json(settings.currency)


@router.get(
    "/v1/prices",
    operation_id="listPrices",
    summary="List price versions",
    description="Every price version in effect, by model (in code point order), then by "
    "`effective_from`; with `ended=true`, also those replaced or withdrawn, each with when.",
    responses=answers(PricesAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def get_prices(
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    settings: AppSettings,
    engine: RequestEngine,
    model: Annotated[str | None, Query(description="Only this model's versions.")] = None,
    ended: Annotated[bool, Query(description="Also the versions replaced or withdrawn.")] = False,
) -> dict[str, Any]:
    async with engine.connect() as connection:
        versions = await list_prices(
            connection, model=None if model is None else checked_model(model), ended=ended
        )
    return {
        "currency": settings.currency,
        "prices": [version.as_json(settings.currency) for version in versions],
    }
