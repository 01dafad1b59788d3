"""Applying the Alembic migrations and telling whether a database is at the newest one.

The migration scripts ship inside this package (`env.py`, `versions/`), so an installed wheel
migrates as a checkout does; the repository's `alembic.ini` points here for `alembic revision`.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.database import UnsuitableDatabase
from tokenpulse.storage.partitions import is_partition

SCRIPTS = Path(__file__).resolve().parent
MIGRATION_LOCK = 0x746F6B656E70  # "tokenp": any constant shared by every instance


class UnknownMigration(UnsuitableDatabase):
    """The database is at a migration this code does not have: a newer version migrated it."""


def alembic_config() -> Config:
    """Enough configuration to apply migrations; writing new ones takes the root alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("path_separator", "os")
    return config


def include_name(name: str | None, type_: str, parent_names: Mapping[Any, str | None]) -> bool:
    """What autogenerate compares: not the partitions (nor their indexes), which serving
    creates as days and slots come, and which the schema declares only through their parents."""
    table = name if type_ == "table" else parent_names.get("table_name")
    return table is None or not is_partition(table)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def known_revisions() -> set[str]:
    return {
        script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()
    }


async def upgrade_to_head(connection: AsyncConnection) -> None:
    """Apply every pending migration on `connection`, inside its transaction.

    An advisory lock makes instances that start together migrate one after the other. Raises
    `UnknownMigration`, and changes nothing, when a newer version has migrated the database.
    """
    await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    revision = await current_revision(connection)
    if revision is not None and revision not in known_revisions():
        raise UnknownMigration(
            f"the database is at migration {revision}, which this version of tokenpulse does "
            f"not know (its newest is {head_revision()}): a newer version migrated it; run "
            "that version, or a later one"
        )

    def upgrade(sync_connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = sync_connection
        command.upgrade(config, "head")

    await connection.run_sync(upgrade)


async def current_revision(connection: AsyncConnection) -> str | None:
    """The migration the database is at; None when none was ever applied."""
    exists = await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
    if not exists:
        return None
    revision: str | None = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    return revision
