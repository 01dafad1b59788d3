"""`/v1/notifications` and test notifications: what was found, and what was sent where (admin,
own tenant if bound)."""

import secrets
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from tokenpulse.auth import Caller, require
from tokenpulse.budgets.store import BUDGET_ID
from tokenpulse.database import snapshot
from tokenpulse.errors import InvalidParameters, NotFound, Problem
from tokenpulse.instants import format_rfc3339
from tokenpulse.notifications.answers import NotificationAnswer, NotificationsAnswer
from tokenpulse.notifications.listing import UnknownNotification, list_notifications
from tokenpulse.notifications.outbox import NOTIFICATION_ID, record, send_to
from tokenpulse.openapi import AUTHENTICATED, answers, needs_key
from tokenpulse.query_string import CheckedQuery
from tokenpulse.runtime import RequestEngine, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.webhooks.store import TEST, TYPES, WEBHOOK_ID, find_webhook

router = APIRouter(tags=["webhooks"], route_class=CheckedQuery)
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]

NOTIFICATIONS_MOST = 500


@router.post(
    "/v1/webhooks/{webhook_id}/test",
    operation_id="testWebhook",
    summary="Send a test notification",
    description="A notification of type `webhook.test`, delivered like every other: signed, "
    "retried, and listed with its attempts.",
    status_code=202,
    responses=answers(NotificationAnswer, *AUTHENTICATED, 404, status=202),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def test_webhook(
    webhook_id: str, caller: Admin, engine: RequestEngine, clock: WallClock
) -> JSONResponse:
    if not WEBHOOK_ID.fullmatch(webhook_id):
        raise NotFound("there is no such webhook")
    now = clock()
    async with engine.begin() as connection:
        found = await find_webhook(connection, webhook_id, tenant=caller.tenant)
        if found is None:
            raise NotFound("there is no such webhook")
        body = {"type": TEST, "webhook_id": found.id, "sent_at": format_rfc3339(now)}
        recorded = await record(
            connection,
            type=TEST,
            # Each test is one of its own, however many are sent at one instant.
            subject=f"test:{found.id}:{secrets.token_hex(8)}",
            amount=Decimal(0),
            tenant=found.tenant,
            budget_id=None,
            body=body,
            now=now,
        )
        assert recorded is not None
        await send_to(connection, recorded.id, [found.id], now)
        listed, _ = await list_notifications(connection, tenant=None, limit=1, ids=[recorded.id])
    return JSONResponse(listed[0], status_code=202)


@router.get(
    "/v1/notifications",
    operation_id="listNotifications",
    summary="List notifications",
    description="Crossings of budget thresholds and launch milestones, and test notifications, "
    "newest first, each with its deliveries and every attempt. A tenant's admin key sees its "
    "own tenant's only.",
    responses=answers(NotificationsAnswer, *AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def get_notifications(
    caller: Admin,
    engine: RequestEngine,
    limit: Annotated[int, Query(ge=1, le=NOTIFICATIONS_MOST)] = 50,
    before: Annotated[
        str | None, Query(description="The `next_before` of the page before.")
    ] = None,
    budget_id: Annotated[str | None, Query(description="Only this budget's.")] = None,
    type: Annotated[str | None, Query(description="Only notifications of this type.")] = None,
) -> dict[str, Any]:
    problems: list[Problem] = []
    if before is not None and not NOTIFICATION_ID.fullmatch(before):
        problems.append(Problem("before", "must be a notification's id, msg_…"))
    if budget_id is not None and not BUDGET_ID.fullmatch(budget_id):
        problems.append(Problem("budget_id", "must be a budget's id, bud_…"))
    if type is not None and type not in TYPES:
        problems.append(Problem("type", f"must be one of {', '.join(TYPES)}"))
    if problems:
        raise InvalidParameters.listing(problems)
    # One snapshot: a delivery and its attempts as they were at one moment.
    async with snapshot(engine) as connection:
        try:
            listed, next_before = await list_notifications(
                connection,
                tenant=caller.tenant,
                limit=limit,
                before=before,
                budget_id=budget_id,
                type=type,
            )
        except UnknownNotification:
            raise InvalidParameters.of("before", "names no notification") from None
    return {"notifications": listed, "next_before": next_before}
