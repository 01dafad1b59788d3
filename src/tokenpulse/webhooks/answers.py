"""The shapes of webhook answers, as the OpenAPI document describes them."""

from typing import Annotated

from pydantic import Field

from tokenpulse.openapi import Shape


class WebhookAnswer(Shape):
    id: str
    tenant: str | None
    url: str
    description: str
    events: list[str]
    created_at: str
    deleted_at: str | None


class CreatedWebhookAnswer(WebhookAnswer):
    secret: Annotated[str, Field(description="The signing secret, `whsec_…`, shown this once.")]


class WebhooksAnswer(Shape):
    webhooks: list[WebhookAnswer]
