"""The shapes of price answers, as the OpenAPI document describes them."""

from typing import Literal

from tokenpulse.openapi import Shape


class PerMillionTokens(Shape):
    input: str
    cached_input: str
    cache_write_input: str
    output: str
    reasoning: str | None
    """None: reasoning tokens cost what output tokens do."""


class PriceVersionAnswer(Shape):
    id: int
    model: str
    effective_from: str
    currency: str
    per_million_tokens: PerMillionTokens
    created_at: str
    ended_at: str | None


class PutPriceAnswer(PriceVersionAnswer):
    outcome: Literal["created", "unchanged", "replaced"]
    replaced: PriceVersionAnswer | None


class PricesAnswer(Shape):
    currency: str
    """The deployment's (`TOKENPULSE_CURRENCY`): that of every price and cost it answers."""
    prices: list[PriceVersionAnswer]
