"""`/v1/keys`: creating, listing and revoking API keys (admin scope, own tenant if bound)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenpulse.arrival import BodyTimeouts
from tokenpulse.auth import Caller, recheck, require
from tokenpulse.errors import Forbidden, NotFound
from tokenpulse.keys.names import control_problem
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import create_key, list_keys, revoke_key
from tokenpulse.keys.tokens import KEY_ID
from tokenpulse.openapi import (
    AUTHENTICATED,
    CreatedKeyAnswer,
    KeyAnswer,
    KeysAnswer,
    answers,
    json_body,
)
from tokenpulse.request_body import read_model
from tokenpulse.runtime import Runtime, get_runtime
from tokenpulse.text import STRING_MAX, text_problem

router = APIRouter(tags=["keys"])
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
    status_code=201,
    responses=answers(CreatedKeyAnswer, *AUTHENTICATED, 408, 413, 415, 422, status=201),
    openapi_extra=json_body(KeyRequest),
)
async def post_key(
    http_request: Request, caller: Admin, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> JSONResponse:
    request = await read_model(http_request, KeyRequest, BodyTimeouts.of(runtime.settings))
    # A key revoked while the body was arriving creates none.
    await recheck(runtime, caller)
    tenant = request.tenant
    if caller.tenant is not None:
        if tenant not in (None, caller.tenant):
            raise Forbidden("a tenant-bound key can create keys for its own tenant only")
        tenant = caller.tenant
    async with runtime.engine.begin() as connection:
        created = await create_key(
            connection, name=request.name, scope=request.scope, tenant=tenant
        )
    return JSONResponse({**created.key.as_json(), "key": created.token}, status_code=201)


@router.get("/v1/keys", responses=answers(KeysAnswer, *AUTHENTICATED))
async def get_keys(
    caller: Admin, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> dict[str, Any]:
    async with runtime.engine.connect() as connection:
        keys = await list_keys(connection, tenant=caller.tenant)
    return {"keys": [key.as_json() for key in keys]}


@router.delete("/v1/keys/{key_id}", responses=answers(KeyAnswer, *AUTHENTICATED, 404))
async def delete_key(
    key_id: str, caller: Admin, runtime: Annotated[Runtime, Depends(get_runtime)]
) -> dict[str, Any]:
    if not KEY_ID.fullmatch(key_id):
        raise NotFound("there is no such key")
    async with runtime.engine.begin() as connection:
        revoked = await revoke_key(connection, key_id, tenant=caller.tenant)
    if revoked is None:
        raise NotFound("there is no such key")
    # This worker refuses the key at once; the others within the key cache's lifetime.
    runtime.keys.forget(key_id)
    return revoked.as_json()
