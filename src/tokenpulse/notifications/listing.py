"""Notifications as `/v1/notifications` lists them: newest first, each with its deliveries and
their attempts."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import format_rfc3339
from tokenpulse.tables import delivery, delivery_attempt, notification


class UnknownNotification(Exception):
    """`before` names no notification."""


async def list_notifications(
    connection: AsyncConnection,
    *,
    tenant: str | None,
    limit: int,
    before: str | None = None,
    budget_id: str | None = None,
    type: str | None = None,
    ids: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` notifications older than the one `before` names, newest first, and the id
    to page on from (None at the last page). A key bound to `tenant` sees only its tenant's."""
    row = notification.c
    statement = select(
        row.id, row.type, row.tenant, row.body, row.found_at, row.corrected_at
    ).order_by(row.found_at.desc(), row.seq.desc())
    if tenant is not None:
        statement = statement.where(row.tenant == tenant)
    if budget_id is not None:
        statement = statement.where(row.budget_id == budget_id)
    if type is not None:
        statement = statement.where(row.type == type)
    if ids is not None:
        statement = statement.where(row.id.in_(list(ids)))
    if before is not None:
        cursor = select(row.found_at, row.seq).where(row.id == before)
        if tenant is not None:
            cursor = cursor.where(row.tenant == tenant)
        after = (await connection.execute(cursor)).one_or_none()
        if after is None:
            raise UnknownNotification(before)
        statement = statement.where(tuple_(row.found_at, row.seq) < tuple_(*after))
    rows = (await connection.execute(statement.limit(limit + 1))).all()
    page = rows[:limit]
    deliveries = await _deliveries(connection, [each.id for each in page])
    listed = [
        {
            "id": each.id,
            "type": each.type,
            "tenant": each.tenant,
            "found_at": format_rfc3339(each.found_at),
            "corrected_at": _instant(each.corrected_at),
            "body": each.body,
            "deliveries": deliveries.get(each.id, []),
        }
        for each in page
    ]
    return listed, page[-1].id if len(rows) > limit else None


def _instant(value: Any) -> str | None:
    return None if value is None else format_rfc3339(value)


async def _deliveries(
    connection: AsyncConnection, notification_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    if not notification_ids:
        return {}
    attempts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in await connection.execute(
        select(delivery_attempt)
        .where(delivery_attempt.c.notification_id.in_(list(notification_ids)))
        .order_by(delivery_attempt.c.id)
    ):
        attempts.setdefault((row.notification_id, row.webhook_id), []).append(
            {
                "at": format_rfc3339(row.attempted_at),
                "status": row.status,
                "error": row.error,
                "seconds": round(row.seconds, 6),
            }
        )
    found: dict[str, list[dict[str, Any]]] = {}
    for row in await connection.execute(
        select(delivery)
        .where(delivery.c.notification_id.in_(list(notification_ids)))
        .order_by(delivery.c.webhook_id)
    ):
        found.setdefault(row.notification_id, []).append(
            {
                "webhook_id": row.webhook_id,
                "state": row.state,
                "next_attempt_at": _instant(row.next_attempt_at),
                "delivered_at": _instant(row.delivered_at),
                "attempts": attempts.get((row.notification_id, row.webhook_id), []),
            }
        )
    return found
