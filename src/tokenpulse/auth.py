"""Who is calling and what they may do: the dependency every protected route declares."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from fastapi import Request


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    scope: Scope
    tenant: str | None
    """The tenant the caller's key is bound to; None for a platform key that spans tenants."""


# Until API keys exist every caller is treated as a platform admin. Routes already state the
# scope they need, so keys plug in here without touching them.
_ANONYMOUS = Caller(key_id=None, scope=Scope.ADMIN, tenant=None)


def require(scope: Scope) -> Callable[[Request], Awaitable[Caller]]:
    async def caller(request: Request) -> Caller:
        return _ANONYMOUS

    return caller
