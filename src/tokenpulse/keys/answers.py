"""What `/v1/keys` answers, as `/openapi.json` describes it."""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from tokenpulse.openapi import Shape
from tokenpulse.scopes import Scope


class KeyAnswer(Shape):
    id: str
    name: str
    scope: Scope
    tenant: str | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKeyAnswer(KeyAnswer):
    key: Annotated[str, Field(description="The secret, shown this once.")]


class KeysAnswer(Shape):
    keys: list[KeyAnswer]
