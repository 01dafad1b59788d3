"""Webhooks in the database: a URL, what it receives, and the secret its deliveries are signed
with."""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, any_, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import format_rfc3339
from tokenpulse.tables import delivery, webhook
from tokenpulse.webhooks.signing import new_secret

WEBHOOK_ID = re.compile(r"wh_[0-9a-f]{16}")

BUDGET_CROSSED = "budget.threshold_crossed"
LAUNCH_CROSSED = "launch.milestone_crossed"
TEST = "webhook.test"
EVENTS = (BUDGET_CROSSED, LAUNCH_CROSSED)
"""What a webhook may subscribe to."""
TYPES = (*EVENTS, TEST)
"""What a notification may be."""


@dataclass(frozen=True)
class Webhook:
    id: str
    tenant: str | None
    url: str
    description: str
    secret: str
    events: tuple[str, ...]
    created_at: datetime
    deleted_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """Everything but the secret."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "url": self.url,
            "description": self.description,
            "events": list(self.events),
            "created_at": format_rfc3339(self.created_at),
            "deleted_at": None if self.deleted_at is None else format_rfc3339(self.deleted_at),
        }


_COLUMNS = (
    webhook.c.id,
    webhook.c.tenant,
    webhook.c.url,
    webhook.c.description,
    webhook.c.secret,
    webhook.c.events,
    webhook.c.created_at,
    webhook.c.deleted_at,
)


def _webhook(row: Row[*tuple[Any, ...]]) -> Webhook:
    return Webhook(**{**row._asdict(), "events": tuple(row.events)})


async def create_webhook(
    connection: AsyncConnection,
    *,
    tenant: str | None,
    url: str,
    description: str,
    events: tuple[str, ...],
    now: datetime,
) -> Webhook:
    made = Webhook(
        f"wh_{secrets.token_hex(8)}", tenant, url, description, new_secret(), events, now
    )
    await connection.execute(
        webhook.insert().values(
            id=made.id,
            tenant=tenant,
            url=url,
            description=description,
            secret=made.secret,
            events=list(events),
            created_at=now,
        )
    )
    return made


def _visible(tenant: str | None) -> Any:
    """What a key bound to `tenant` sees: its tenant's webhooks; a platform key every one."""
    return webhook.c.tenant == tenant if tenant is not None else True


async def list_webhooks(connection: AsyncConnection, *, tenant: str | None) -> list[Webhook]:
    rows = await connection.execute(
        select(*_COLUMNS)
        .where(webhook.c.deleted_at.is_(None), _visible(tenant))
        .order_by(webhook.c.created_at, webhook.c.id)
    )
    return [_webhook(row) for row in rows]


async def find_webhook(
    connection: AsyncConnection, webhook_id: str, *, tenant: str | None
) -> Webhook | None:
    """The webhook, if a key bound to `tenant` may see it and it is not deleted."""
    row = (
        await connection.execute(
            select(*_COLUMNS).where(
                webhook.c.id == webhook_id, webhook.c.deleted_at.is_(None), _visible(tenant)
            )
        )
    ).one_or_none()
    return None if row is None else _webhook(row)


async def notifiable_webhook(
    connection: AsyncConnection, webhook_id: str, *, tenant: str, platform: bool
) -> Webhook | None:
    """The webhook a budget of `tenant` may notify, if it receives budget notifications: the
    tenant's own, or, for a budget a platform key makes, a platform one."""
    row = (
        await connection.execute(
            select(*_COLUMNS).where(
                webhook.c.id == webhook_id,
                webhook.c.deleted_at.is_(None),
                or_(
                    webhook.c.tenant == tenant, and_(webhook.c.tenant.is_(None), literal(platform))
                ),
                literal(BUDGET_CROSSED) == any_(webhook.c.events),
            )
        )
    ).one_or_none()
    return None if row is None else _webhook(row)


async def delete_webhook(
    connection: AsyncConnection, webhook_id: str, *, tenant: str | None, now: datetime
) -> Webhook | None:
    """Delete the webhook and cancel its deliveries not yet made; the webhook that was."""
    row = (
        await connection.execute(
            update(webhook)
            .where(webhook.c.id == webhook_id, webhook.c.deleted_at.is_(None), _visible(tenant))
            .values(deleted_at=now)
            .returning(*_COLUMNS)
        )
    ).one_or_none()
    if row is None:
        return None
    await cancel_pending(connection, delivery.c.webhook_id == webhook_id)
    return _webhook(row)


async def cancel_pending(connection: AsyncConnection, *where: ColumnElement[bool]) -> None:
    """Cancel the deliveries still to be made that `where` selects: none is attempted again."""
    await connection.execute(
        update(delivery)
        .where(delivery.c.state == "pending", *where)
        .values(state="cancelled", next_attempt_at=None)
    )
