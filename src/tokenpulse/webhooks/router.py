"""`/v1/webhooks`: where notifications go (admin, own tenant if bound)."""

from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tokenpulse.auth import Authentication, Caller, require
from tokenpulse.errors import Forbidden, InvalidParameters, NotFound
from tokenpulse.openapi import AUTHENTICATED, answers, json_body, needs_key
from tokenpulse.query_string import CheckedQuery
from tokenpulse.request_body import read_model
from tokenpulse.runtime import AppSettings, RequestEngine, Timeouts, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.text import storable, text_problem
from tokenpulse.webhooks.answers import (
    CreatedWebhookAnswer,
    WebhookAnswer,
    WebhooksAnswer,
)
from tokenpulse.webhooks.destinations import literal_problem
from tokenpulse.webhooks.store import (
    BUDGET_CROSSED,
    EVENTS,
    LAUNCH_CROSSED,
    WEBHOOK_ID,
    create_webhook,
    delete_webhook,
    list_webhooks,
)

router = APIRouter(tags=["webhooks"], route_class=CheckedQuery)
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]

URL_MAX = 2048


def _url(value: str) -> str:
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http or https URL, such as https://example.com/hook")
    if any(character.isspace() for character in value):
        raise ValueError("must not contain spaces")
    try:
        # The host as the sender will ask for it (an IDNA name decoded).
        _ = httpx.URL(value).host
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"is not a URL that can be sent to: {exc}") from None
    return value


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Annotated[str, Field(min_length=1, max_length=URL_MAX), AfterValidator(_url)]
    description: Annotated[str, Field(max_length=1000), AfterValidator(storable)] = ""
    events: list[str] = Field(
        default=[BUDGET_CROSSED],
        min_length=1,
        max_length=len(EVENTS),
        description=f"What it receives: {', '.join(EVENTS)}.",
    )


@router.post(
    "/v1/webhooks",
    operation_id="createWebhook",
    summary="Create a webhook",
    description="An endpoint that notifications are posted to, signed by the Standard Webhooks "
    "scheme with a secret of its own. The answer holds the secret, shown this once. Launch "
    "milestones are a platform key's to subscribe to; a tenant's admin key makes webhooks for "
    "its own tenant.",
    status_code=201,
    responses=answers(CreatedWebhookAnswer, *AUTHENTICATED, 408, 413, 415, 422, status=201),
    openapi_extra=json_body(WebhookRequest) | needs_key(Scope.ADMIN),
)
async def post_webhook(
    http_request: Request,
    caller: Admin,
    authentication: Authentication,
    timeouts: Timeouts,
    engine: RequestEngine,
    clock: WallClock,
    settings: AppSettings,
) -> JSONResponse:
    request = await read_model(http_request, WebhookRequest, timeouts)
    await authentication.recheck(caller)
    for index, event in enumerate(request.events):
        if event not in EVENTS:
            raise InvalidParameters.of(f"events[{index}]", f"must be one of {', '.join(EVENTS)}")
    if not settings.webhook_private_addresses and (problem := literal_problem(request.url)):
        raise InvalidParameters.of(
            "url",
            f"points at the service's own network ({problem}); webhooks go to public "
            "addresses unless TOKENPULSE_WEBHOOK_PRIVATE_ADDRESSES is set",
        )
    if LAUNCH_CROSSED in request.events and caller.tenant is not None:
        raise Forbidden("launch milestones concern every tenant: only a platform key subscribes")
    async with engine.begin() as connection:
        made = await create_webhook(
            connection,
            tenant=caller.tenant,
            url=request.url,
            description=request.description,
            events=tuple(dict.fromkeys(request.events)),
            now=clock(),
        )
    return JSONResponse({**made.as_json(), "secret": made.secret}, status_code=201)


@router.get(
    "/v1/webhooks",
    operation_id="listWebhooks",
    summary="List webhooks",
    description="Every webhook, or a tenant's admin key's own tenant's, never their secrets.",
    responses=answers(WebhooksAnswer, *AUTHENTICATED),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def get_webhooks(caller: Admin, engine: RequestEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        webhooks = await list_webhooks(connection, tenant=caller.tenant)
    return {"webhooks": [each.as_json() for each in webhooks]}


@router.delete(
    "/v1/webhooks/{webhook_id}",
    operation_id="deleteWebhook",
    summary="Delete a webhook",
    description="Its deliveries not yet made are cancelled; its notifications stay listed.",
    responses=answers(WebhookAnswer, *AUTHENTICATED, 404),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def remove_webhook(
    webhook_id: str, caller: Admin, engine: RequestEngine, clock: WallClock
) -> dict[str, Any]:
    if not WEBHOOK_ID.fullmatch(webhook_id):
        raise NotFound("there is no such webhook")
    async with engine.begin() as connection:
        deleted = await delete_webhook(connection, webhook_id, tenant=caller.tenant, now=clock())
    if deleted is None:
        raise NotFound("there is no such webhook")
    return deleted.as_json()
