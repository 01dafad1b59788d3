"""Who is calling and what they may do: the dependency every protected route declares."""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tokenpulse.access import note_caller
from tokenpulse.database import is_unavailable
from tokenpulse.errors import Forbidden, TooManyRequests, Unauthorized, Unavailable
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.tokens import parse_token, secret_matches
from tokenpulse.runtime import Runtime, get_runtime


@dataclass(frozen=True)
class Caller:
    key_id: str
    scope: Scope
    tenant: str | None
    """The tenant the caller's key is bound to; None for a platform key that spans tenants."""


def require(scope: Scope) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits only callers whose key's scope covers `scope`."""

    async def caller(request: Request, runtime: Annotated[Runtime, Depends(get_runtime)]) -> Caller:
        found = await authenticate(request, runtime)
        if not found.scope.allows(scope):
            raise Forbidden(f"this key has the {found.scope} scope; this needs {scope}")
        wait = runtime.rate_limits.take(found.key_id, found.scope)
        if wait:
            raise TooManyRequests(
                "this key sends requests faster than its rate limit",
                retry_after=max(1, math.ceil(wait)),
            )
        return found

    return caller


async def authenticate(request: Request, runtime: Runtime) -> Caller:
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized("send an API key: Authorization: Bearer tp_…")
    parsed = parse_token(token)
    if parsed is None:
        raise Unauthorized("the API key is unknown or revoked")
    key_id, secret = parsed
    try:
        stored = await runtime.keys.lookup(key_id)
    except Exception as exc:
        if is_unavailable(exc):
            # Counted here: the error answered is ours, so the handler of failures never sees it.
            runtime.metrics.failed(unavailable=True)
            raise Unavailable(
                "the database is unavailable", retry_after=runtime.settings.retry_after_seconds
            ) from None
        raise
    if stored is None or stored.key.revoked_at is not None:
        raise Unauthorized("the API key is unknown or revoked")
    if not secret_matches(secret, stored.secret_hash):
        raise Unauthorized("the API key is unknown or revoked")
    note_caller(request.scope, stored.key.id, stored.key.tenant)
    return Caller(stored.key.id, stored.key.scope, stored.key.tenant)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    kind, _, token = header.partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None
