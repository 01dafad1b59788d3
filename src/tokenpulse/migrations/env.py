"""Alembic environment: runs migrations on a connection handed over by tokenpulse, or on its own."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.migrations import include_name
from tokenpulse.settings import Settings
from tokenpulse.tables import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    database_url = Settings().database_url
    if database_url is None:
        raise SystemExit("Set TOKENPULSE_DATABASE_URL, or run `tokenpulse migrate`.")
    engine = create_async_engine(async_url(database_url.get_secret_value()))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run them against a database.")

handed_over = context.config.attributes.get("connection")
if handed_over is not None:
    _run(handed_over)
else:
    asyncio.run(_run_standalone())
