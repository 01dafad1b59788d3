"""Callers found by their API key: the key looked up through the worker's registry, its secret
checked, and every failure counted against the client's address."""

import math
from typing import Annotated, Protocol

from fastapi import Depends, Request

from tokenpulse.access import note_caller
from tokenpulse.auth import Caller
from tokenpulse.database import is_unavailable
from tokenpulse.errors import ServiceError, TooManyRequests, Unauthorized, Unavailable
from tokenpulse.keys.registry import KeyRegistry
from tokenpulse.keys.store import StoredKey
from tokenpulse.keys.tokens import parse_token, secret_matches
from tokenpulse.refusals import client_address
from tokenpulse.runtime import Shared

UNKNOWN_OR_REVOKED = "the API key is unknown or revoked"


class Observer(Protocol):
    """What authentication reports (for metrics)."""

    def failed(self, *, unavailable: bool) -> None: ...


class KeyAuthenticator:
    """The `auth.Authenticator` of API keys."""

    def __init__(self, registry: KeyRegistry, *, observer: Observer, retry_after: int) -> None:
        self._registry = registry
        self._observer = observer
        self._retry_after = retry_after

    async def authenticate(self, request: Request) -> Caller:
        """The caller behind the request's key; refused without the database where memory
        will do.

        Every refusal counts against the client's address; an address past its failures is
        answered 429 and may look up only ids this worker has seen a key of.
        """
        token = _bearer(request.headers.get("authorization"))
        if token is None:
            raise self._refused(request, "send an API key: Authorization: Bearer tp_…")
        parsed = parse_token(token)
        if parsed is None:
            raise self._refused(request, UNKNOWN_OR_REVOKED)
        key_id, secret = parsed
        failures = self._registry.failures
        # Looking up an id this worker has never seen a key of is charged as a failure before
        # it is made, so that concurrent lookups cannot overrun the allowance; a key found
        # repays it.
        charged = _address(request) if self._registry.is_new(key_id) else None
        if charged is not None and (wait := failures.take(charged)):
            raise _too_many_failures(wait)
        try:
            stored = await self._lookup(key_id)
        except BaseException:
            if charged is not None:
                failures.refund(charged)
            raise
        if (
            stored is None
            or stored.key.revoked_at is not None
            or not secret_matches(secret, stored.secret_hash)
        ):
            if charged is not None:
                raise Unauthorized(UNKNOWN_OR_REVOKED)
            raise self._refused(request, UNKNOWN_OR_REVOKED)
        if charged is not None:
            failures.refund(charged)
        note_caller(request.scope, stored.key.id, stored.key.tenant)
        return Caller(stored.key.id, stored.key.scope, stored.key.tenant)

    async def recheck(self, caller: Caller) -> None:
        """Read through the key cache, so at most its lifetime stale."""
        stored = await self._lookup(caller.key_id)
        if stored is None or stored.key.revoked_at is not None:
            raise Unauthorized(UNKNOWN_OR_REVOKED)

    async def _lookup(self, key_id: str) -> StoredKey | None:
        try:
            return await self._registry.lookup(key_id)
        except Exception as exc:
            if is_unavailable(exc):
                # Counted here: the error answered is ours, so the handler of failures never
                # sees it.
                self._observer.failed(unavailable=True)
                raise Unavailable(
                    "the database is unavailable", retry_after=self._retry_after
                ) from None
            raise

    def _refused(self, request: Request, message: str) -> ServiceError:
        wait = self._registry.failures.take(_address(request))
        return _too_many_failures(wait) if wait else Unauthorized(message)


KEY_REGISTRY = Shared[KeyRegistry]("key_registry")

Registry = Annotated[KeyRegistry, Depends(KEY_REGISTRY.read)]
"""The worker's key registry, for a route that changes what it should remember."""


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
