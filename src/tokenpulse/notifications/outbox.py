"""The outbox: each crossing recorded once, with a delivery for each webhook it goes to, in the
transaction that found it."""

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, func, literal, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.tables import delivery, notification, webhook

NOTIFICATION_ID = re.compile(r"msg_[0-9a-f]{24}")

CROSSING_FIELDS = ("crossed_at", "event_id", "value_at_crossing")
"""What a later search may correct in a notification's body; never what makes it one."""


def new_id() -> str:
    """A notification's id, which deliveries send as `webhook-id`."""
    return f"msg_{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Recorded:
    id: str
    created: bool
    """False: the crossing was recorded before, and its instant has been corrected."""


async def record(
    connection: AsyncConnection,
    *,
    type: str,
    subject: str,
    amount: Decimal,
    tenant: str | None,
    budget_id: str | None,
    body: dict[str, Any],
    now: datetime,
) -> Recorded | None:
    """Record the crossing of `amount` in `subject`: a new notification; or, if it was recorded
    before with another crossing, the crossing corrected in its body (never notified again);
    None if it was recorded just so."""
    made = new_id()
    values = insert(notification).values(
        id=made,
        type=type,
        subject=subject,
        amount=amount,
        tenant=tenant,
        budget_id=budget_id,
        body={**body, "id": made},
        found_at=now,
    )
    stored, excluded = notification.c.body, values.excluded.body
    corrected = func.jsonb_build_object(
        *(part for name in CROSSING_FIELDS for part in (name, excluded[name]))
    )
    statement = values.on_conflict_do_update(
        index_elements=[notification.c.subject, notification.c.amount],
        set_={"body": stored.op("||")(corrected), "corrected_at": now},
        where=func.jsonb_build_array(*(stored[name] for name in CROSSING_FIELDS)).is_distinct_from(
            func.jsonb_build_array(*(excluded[name] for name in CROSSING_FIELDS))
        ),
    ).returning(
        notification.c.id,
        # xmax is 0 for a row this statement inserted, and set for one it updated.
        (literal_column("xmax") == 0).label("created"),
    )
    row = (await connection.execute(statement)).one_or_none()
    return None if row is None else Recorded(row.id, bool(row.created))


async def send_to(
    connection: AsyncConnection, notification_id: str, webhooks: Sequence[str], now: datetime
) -> None:
    """Deliveries of the notification, due now, to each of `webhooks` not deleted."""
    if not webhooks:
        return
    alive = select(
        literal(notification_id).label("notification_id"),
        webhook.c.id,
        literal("pending").label("state"),
        literal(now, DateTime(timezone=True)).label("next_attempt_at"),
    ).where(webhook.c.id.in_(list(webhooks)), webhook.c.deleted_at.is_(None))
    await connection.execute(
        insert(delivery)
        .from_select(["notification_id", "webhook_id", "state", "next_attempt_at"], alive)
        .on_conflict_do_nothing()
    )
