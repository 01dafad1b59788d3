"""Keys in the database: creating, listing and revoking them, and finding one by id."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.tokens import new_secret
from tokenpulse.scopes import Scope
from tokenpulse.tables import api_key


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: Scope
    tenant: str | None
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope.value,
            "tenant": self.tenant,
            "created_at": format_rfc3339(self.created_at),
            "revoked_at": None if self.revoked_at is None else format_rfc3339(self.revoked_at),
        }


@dataclass(frozen=True)
class StoredKey:
    key: ApiKey
    secret_hash: bytes


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    token: str
    """The secret to present as `Authorization: Bearer …`: returned this once, never stored."""


_COLUMNS = (
    api_key.c.id,
    api_key.c.name,
    api_key.c.scope,
    api_key.c.tenant,
    api_key.c.created_at,
    api_key.c.revoked_at,
)


def _key(row: Any) -> ApiKey:
    return ApiKey(row.id, row.name, Scope(row.scope), row.tenant, row.created_at, row.revoked_at)


async def create_key(
    connection: AsyncConnection, *, name: str, scope: Scope, tenant: str | None
) -> CreatedKey:
    secret = new_secret()
    statement = (
        insert(api_key)
        .values(
            id=secret.key_id,
            name=name,
            scope=scope.value,
            tenant=tenant,
            secret_hash=secret.secret_hash,
        )
        .returning(*_COLUMNS)
    )
    row = (await connection.execute(statement)).one()
    return CreatedKey(_key(row), secret.token)


async def list_keys(connection: AsyncConnection, *, tenant: str | None = None) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first; only `tenant`'s keys when given."""
    statement = select(*_COLUMNS).order_by(api_key.c.created_at, api_key.c.id)
    if tenant is not None:
        statement = statement.where(api_key.c.tenant == tenant)
    return [_key(row) for row in await connection.execute(statement)]


async def revoke_key(
    connection: AsyncConnection, key_id: str, *, tenant: str | None = None
) -> ApiKey | None:
    """Revoke the key (revoking it again changes nothing); None if there is no such key.

    With `tenant`, only a key bound to that tenant is found.
    """
    condition = api_key.c.id == key_id
    if tenant is not None:
        condition = condition & (api_key.c.tenant == tenant)
    await connection.execute(
        update(api_key)
        .where(condition, api_key.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    row = (await connection.execute(select(*_COLUMNS).where(condition))).one_or_none()
    return None if row is None else _key(row)


async def find_key(connection: AsyncConnection, key_id: str) -> StoredKey | None:
    row = (
        await connection.execute(
            select(*_COLUMNS, api_key.c.secret_hash).where(api_key.c.id == key_id)
        )
    ).one_or_none()
    return None if row is None else StoredKey(_key(row), row.secret_hash)


async def has_keys(connection: AsyncConnection) -> bool:
    """Whether any key was ever created, revoked ones included."""
    return await connection.scalar(select(api_key.c.id).limit(1)) is not None
