"""Who is calling and what they may do: the dependency every protected route declares.

How a caller is found is the keys package's (`keys.authentication`); this module knows only
that some `Authenticator` finds one.
"""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Protocol

from fastapi import Depends, Request

from tokenpulse.errors import Forbidden, TooManyRequests
from tokenpulse.ratelimit import RateLimits
from tokenpulse.runtime import Shared
from tokenpulse.scopes import Scope


@dataclass(frozen=True)
class Caller:
    key_id: str
    scope: Scope
    tenant: str | None
    """The tenant the caller's key is bound to; None for a platform key that spans tenants."""


def account_of(caller: Caller) -> str:
    """Whose share of a worker a request uses: its key's tenant, or a platform key's own."""
    return f"tenant:{caller.tenant}" if caller.tenant is not None else f"key:{caller.key_id}"


class Authenticator(Protocol):
    async def authenticate(self, request: Request) -> Caller:
        """The caller behind the request; raises the error to answer when there is none."""
        ...

    async def recheck(self, caller: Caller) -> None:
        """Refuse a caller whose key was revoked since it was admitted, for a request that took
        a while to arrive."""
        ...


AUTHENTICATOR = Shared[Authenticator]("authenticator")
RATE_LIMITS = Shared[RateLimits]("rate_limits")

Authentication = Annotated[Authenticator, Depends(AUTHENTICATOR.read)]


@cache
def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits only callers whose key's scope covers `scope`, within their
    key's rate limit.

    One function per scope: FastAPI resolves a dependency once per request, so that a route and
    the dependencies it declares, each asking for the caller, authenticate it and spend its rate
    limit once.
    """

    async def caller(
        request: Request,
        authentication: Authentication,
        limits: Annotated[RateLimits, Depends(RATE_LIMITS.read)],
    ) -> Caller:
        found = await authentication.authenticate(request)
        if not found.scope.allows(scope):
            raise Forbidden(f"this key has the {found.scope} scope; this needs {scope}")
        wait = limits.take(found.key_id, found.scope)
        if wait:
            raise TooManyRequests(
                "this key sends requests faster than its rate limit",
                retry_after=max(1, math.ceil(wait)),
            )
        return found

    return caller


def platform_admin(caller: Caller, what: str) -> None:
    """Refuse a caller bound to a tenant a change of `what`, which concerns every tenant."""
    if caller.tenant is not None:
        raise Forbidden(f"{what} concern every tenant: only a platform admin key may change them")
