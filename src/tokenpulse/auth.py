"""Who is calling and what they may do: the dependency every protected route declares."""

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tokenpulse.access import note_caller
from tokenpulse.database import is_unavailable
from tokenpulse.errors import (
    Forbidden,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tokenpulse.keys.registry import KeyRegistry
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import StoredKey
from tokenpulse.keys.tokens import parse_token, secret_matches
from tokenpulse.refusals import client_address
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


UNKNOWN_OR_REVOKED = "the API key is unknown or revoked"


async def authenticate(request: Request, runtime: Runtime) -> Caller:
    """The caller behind the request's key; refused without the database where memory will do.

    Every refusal counts against the client's address; an address past its failures is answered
    429 and may look up only ids this worker has seen a key of.
    """
    registry = runtime.keys
    token = _bearer(request.headers.get("authorization"))
    if token is None:
        raise _refused(request, registry, "send an API key: Authorization: Bearer tp_…")
    parsed = parse_token(token)
    if parsed is None:
        raise _refused(request, registry, UNKNOWN_OR_REVOKED)
    key_id, secret = parsed
    # Looking up an id this worker has never seen a key of is charged as a failure before it
    # is made, so that concurrent lookups cannot overrun the allowance; a key found repays it.
    charged = _address(request) if registry.is_new(key_id) else None
    if charged is not None and (wait := registry.failures.take(charged)):
        raise _too_many_failures(wait)
    try:
        stored = await _lookup(runtime, key_id)
    except BaseException:
        if charged is not None:
            registry.failures.refund(charged)
        raise
    if (
        stored is None
        or stored.key.revoked_at is not None
        or not secret_matches(secret, stored.secret_hash)
    ):
        if charged is not None:
            raise Unauthorized(UNKNOWN_OR_REVOKED)
        raise _refused(request, registry, UNKNOWN_OR_REVOKED)
    if charged is not None:
        registry.failures.refund(charged)
    note_caller(request.scope, stored.key.id, stored.key.tenant)
    return Caller(stored.key.id, stored.key.scope, stored.key.tenant)


async def recheck(runtime: Runtime, caller: Caller) -> None:
    """Refuse a caller whose key was revoked since it was admitted, for a request that took a
    while to arrive: read through the key cache, so at most its lifetime stale."""
    stored = await _lookup(runtime, caller.key_id)
    if stored is None or stored.key.revoked_at is not None:
        raise Unauthorized(UNKNOWN_OR_REVOKED)


async def _lookup(runtime: Runtime, key_id: str) -> StoredKey | None:
    try:
        return await runtime.keys.lookup(key_id)
    except Exception as exc:
        if is_unavailable(exc):
            # Counted here: the error answered is ours, so the handler of failures never sees it.
            runtime.metrics.failed(unavailable=True)
            raise Unavailable(
                "the database is unavailable", retry_after=runtime.settings.retry_after_seconds
            ) from None
        raise


def _refused(request: Request, registry: KeyRegistry, message: str) -> ServiceError:
    wait = registry.failures.take(_address(request))
    return _too_many_failures(wait) if wait else Unauthorized(message)


def _too_many_failures(wait: float) -> TooManyRequests:
    return TooManyRequests(
        "too many failed authentications from this address", retry_after=max(1, math.ceil(wait))
    )


def _address(request: Request) -> str:
    return client_address(request.client.host if request.client else None)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    kind, _, token = header.partition(" ")
    return token.strip() if kind.lower() == "bearer" and token.strip() else None
