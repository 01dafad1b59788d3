"""Launches in the database: a model and the instant it went live."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import format_rfc3339
from tokenpulse.tables import launch


@dataclass(frozen=True)
class Launch:
    model: str
    launched_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "launched_at": format_rfc3339(self.launched_at)}


async def put_launch(
    connection: AsyncConnection, model: str, launched_at: datetime
) -> tuple[Launch, bool]:
    """Create the launch, or move it; and whether it was created."""
    values = insert(launch).values(model=model, launched_at=launched_at)
    statement = values.on_conflict_do_update(
        index_elements=[launch.c.model],
        set_={"launched_at": values.excluded.launched_at, "updated_at": func.now()},
    ).returning(
        launch.c.model,
        launch.c.launched_at,
        # xmax is 0 for a row this statement inserted, and set for one it updated.
        (literal_column("xmax") == 0).label("created"),
    )
    row = (await connection.execute(statement)).one()
    return Launch(row.model, row.launched_at), bool(row.created)


async def delete_launch(connection: AsyncConnection, model: str) -> Launch | None:
    """Delete the launch of `model`: the launch that was, or None if there was none.

    Only the launch goes: its model's events stay, and its milestones, always counted from
    them, are there again should it be set again.
    """
    statement = (
        delete(launch)
        .where(launch.c.model == model)
        .returning(launch.c.model, launch.c.launched_at)
    )
    row = (await connection.execute(statement)).one_or_none()
    return None if row is None else Launch(row.model, row.launched_at)


async def list_launches(connection: AsyncConnection) -> list[Launch]:
    rows = await connection.execute(
        select(launch.c.model, launch.c.launched_at).order_by(launch.c.model.collate("C"))
    )
    return [Launch(model, launched_at) for model, launched_at in rows]


async def find_launch(connection: AsyncConnection, model: str) -> Launch | None:
    row = (
        await connection.execute(
            select(launch.c.model, launch.c.launched_at).where(launch.c.model == model)
        )
    ).one_or_none()
    return None if row is None else Launch(row.model, row.launched_at)
