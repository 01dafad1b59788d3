"""`/v1/keys`: creating, listing and revoking API keys (admin scope, own tenant if bound)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenpulse.auth import Authentication, Caller, require
from tokenpulse.errors import Forbidden, NotFound
from tokenpulse.keys.answers import CreatedKeyAnswer, KeyAnswer, KeysAnswer
from tokenpulse.keys.authentication import Registry
from tokenpulse.keys.names import control_problem
from tokenpulse.keys.store import create_key, list_keys, revoke_key
from tokenpulse.keys.tokens import KEY_ID
from tokenpulse.openapi import AUTHENTICATED, answers, json_body, needs_key
from tokenpulse.query_string import CheckedQuery
from tokenpulse.request_body import read_model
from tokenpulse.runtime import RequestEngine, Timeouts
from tokenpulse.scopes import Scope
from tokenpulse.text import STRING_MAX, text_problem

router = APIRouter(tags=["keys"], route_class=CheckedQuery)
Admin = Annotated[Caller, Depends(require(Scope.ADMIN))]


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=STRING_MAX)
    scope: Scope
    tenant: str | None = Field(default=None, min_length=1, max_length=STRING_MAX)

    @field_validator("name", "tenant", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        # Before pydantic's own check, which would refuse a lone surrogate in other words.
        if isinstance(value, str) and (problem := text_problem(value) or control_problem(value)):
            raise ValueError(problem)
        return value


@router.post(
    "/v1/keys",
    operation_id="createKey",
    summary="Create a key",
    description="A new key with a scope (`ingest`, `read` or `admin`) and maybe a tenant it is "
    "bound to. The answer holds its secret, shown this once: only a hash is stored. A "
    "tenant's admin key creates keys for its own tenant only.",
    status_code=201,
    responses=answers(CreatedKeyAnswer, *AUTHENTICATED, 408, 413, 415, 422, status=201),
    openapi_extra=json_body(KeyRequest) | needs_key(Scope.ADMIN),
)
async def post_key(
    http_request: Request,
    caller: Admin,
    authentication: Authentication,
    timeouts: Timeouts,
    engine: RequestEngine,
) -> JSONResponse:
    request = await read_model(http_request, KeyRequest, timeouts)
    # A key revoked while the body was arriving creates none.
    await authentication.recheck(caller)
    tenant = request.tenant
    if caller.tenant is not None:
        if tenant not in (None, caller.tenant):
            raise Forbidden("a tenant-bound key can create keys for its own tenant only")
        tenant = caller.tenant
    async with engine.begin() as connection:
        created = await create_key(
            connection, name=request.name, scope=request.scope, tenant=tenant
        )
    return JSONResponse({**created.key.as_json(), "key": created.token}, status_code=201)


@router.get(
    "/v1/keys",
    operation_id="listKeys",
    summary="List keys",
    description="Every key, or a tenant's admin key's own tenant's, never their secrets.",
    responses=answers(KeysAnswer, *AUTHENTICATED),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def get_keys(caller: Admin, engine: RequestEngine) -> dict[str, Any]:
    async with engine.connect() as connection:
        keys = await list_keys(connection, tenant=caller.tenant)
    return {"keys": [key.as_json() for key in keys]}


@router.delete(
    "/v1/keys/{key_id}",
    operation_id="revokeKey",
    summary="Revoke a key",
    description="Every worker refuses the key from now on, within the lifetime of its key "
    "cache (`TOKENPULSE_KEY_CACHE_SECONDS`). A tenant's admin key revokes its tenant's keys "
    "only.",
    responses=answers(KeyAnswer, *AUTHENTICATED, 404),
    openapi_extra=needs_key(Scope.ADMIN),
)
async def delete_key(
    key_id: str, caller: Admin, engine: RequestEngine, registry: Registry
) -> dict[str, Any]:
    if not KEY_ID.fullmatch(key_id):
        raise NotFound("there is no such key")
    async with engine.begin() as connection:
        revoked = await revoke_key(connection, key_id, tenant=caller.tenant)
    if revoked is None:
        raise NotFound("there is no such key")
    # This worker refuses the key at once; the others within the key cache's lifetime.
    registry.forget(key_id)
    return revoked.as_json()
