"""The shapes of notification answers, as the OpenAPI document describes them."""

from typing import Any, Literal

from tokenpulse.openapi import Shape


class AttemptAnswer(Shape):
    at: str
    status: int | None
    """None: no answer came; `error` says why."""
    error: str | None
    seconds: float


class DeliveryAnswer(Shape):
    webhook_id: str
    state: Literal["pending", "delivered", "failed", "cancelled"]
    next_attempt_at: str | None
    delivered_at: str | None
    attempts: list[AttemptAnswer]


class NotificationAnswer(Shape):
    id: str
    type: str
    tenant: str | None
    found_at: str
    corrected_at: str | None
    body: dict[str, Any]
    """What is delivered."""
    deliveries: list[DeliveryAnswer]


class NotificationsAnswer(Shape):
    notifications: list[NotificationAnswer]
    next_before: str | None
    """Send as `before` for the next page; None at the last."""
