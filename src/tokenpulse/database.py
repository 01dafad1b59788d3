"""Connection pools to PostgreSQL, created per worker process at start-up, and what the
database's failures mean."""

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tokenpulse.settings import Settings


class UnsuitableDatabase(Exception):
    """The database answers but cannot be used as it is; the message says why, in one line."""


def async_url(url: str) -> URL:
    """`postgresql://…` as the asyncpg dialect spells it."""
    parsed = make_url(url)
    return parsed.set(drivername="postgresql+asyncpg")


def create_engine(
    settings: Settings,
    database_url: str,
    *,
    pool_size: int | None,
    application_name: str = "tokenpulse",
    timeout_on_server: bool = False,
) -> AsyncEngine:
    """Pools of `pool_size` connections; None: no pool, a connection closes when it is closed
    (what holds a session's advisory lock must not outlive its holder in a pool).

    The statement timeout is the driver's, which ends with the process that set it;
    `timeout_on_server` makes PostgreSQL enforce it too, so that the statement of a process that
    died while it waited on a lock ends (and its session with it) within the timeout.
    """
    server_settings = {
        "application_name": application_name,
        # An ack promises durability; never inherit a weaker server default.
        "synchronous_commit": "on",
        "timezone": "UTC",
    }
    if timeout_on_server:
        timeout_ms = int(settings.db_statement_timeout.total_seconds() * 1000)
        server_settings["statement_timeout"] = str(timeout_ms)
    pooling: dict[str, Any] = (
        {"poolclass": NullPool}
        if pool_size is None
        else {
            "pool_size": pool_size,
            "max_overflow": 0,
            "pool_timeout": settings.db_connect_timeout.total_seconds(),
            # A connection left over from before a database restart is replaced before it
            # fails a request: one round trip per checkout buys recovery without an error.
            "pool_pre_ping": True,
        }
    )
    return create_async_engine(
        async_url(database_url),
        **pooling,
        # A failed statement's error, which is logged, must not quote its parameters: for the
        # write path those are the events themselves.
        hide_parameters=True,
        connect_args={
            "timeout": settings.db_connect_timeout.total_seconds(),
            "command_timeout": settings.db_statement_timeout.total_seconds(),
            "server_settings": server_settings,
        },
    )


# SQLSTATE classes that mean "try again later", not "this statement is wrong": connection
# exceptions, insufficient resources, operator intervention (shutdown), transaction rollbacks.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")
# A read-only database (a standby, or one set read-only for maintenance) takes writes again once
# it is promoted or set back: the same events can be sent again then.
_TRANSIENT_SQLSTATES = ("25006",)


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable or overloaded, not a bad statement."""
    for current in causes(exc):
        if isinstance(current, (OSError, TimeoutError, sa_exc.TimeoutError)):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = sqlstate_of(current)
        if sqlstate and (
            sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
        ):
            return True
    return False


COMMIT_REFUSALS = {
    "53100": "the disk is full",
    "53200": "the database is out of memory",
    "25006": "the database is read-only",
}
"""Why a reachable database refuses writes that it would take another time, by SQLSTATE."""


def refusal_to_commit(exc: BaseException) -> str | None:
    """Why the database refused the write that raised `exc`, if it is one of COMMIT_REFUSALS."""
    for current in causes(exc):
        if (sqlstate := sqlstate_of(current)) in COMMIT_REFUSALS:
            return COMMIT_REFUSALS[sqlstate]
    return None


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` came from the database or the way to it, rather than from our own code."""
    return isinstance(exc, sa_exc.SQLAlchemyError) or is_unavailable(exc)


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error (asyncpg's, or SQLAlchemy's adaptation of it)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) and sqlstate else None


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps or was raised from, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__


# What an operator reads when the database refuses a command, by SQLSTATE; of the others, only
# those of a class that means "not usable now" are told in a line: the rest are bugs of ours,
# whose traceback helps.
_OPERATIONAL_CLASSES = ("08", "28", "3D", "53", "57")
_REFUSALS = {
    "53300": "has no connection to spare",
    "28000": "refused the login",
    "28P01": "refused the login",
    "3D000": "has no such database",
    "57P03": "does not accept connections yet",
    "25006": "is read-only",
}


def describe_failure(exc: BaseException, database_url: str) -> str | None:
    """One line for an operator on why the database could not be used, naming where it is but
    never its password; None when `exc` is not such a failure (a bug, whose traceback helps)."""
    if isinstance(exc, UnsuitableDatabase):
        return str(exc)
    where = database_address(database_url)
    # The innermost PostgreSQL error says the most: SQLAlchemy's wrappers repeat it with noise.
    postgres = [cause for cause in causes(exc) if sqlstate_of(cause)]
    if postgres:
        error = postgres[-1]
        sqlstate = sqlstate_of(error)
        message = " ".join(str(getattr(error, "message", None) or error).split())
        if sqlstate in _REFUSALS:
            return f"the database at {where} {_REFUSALS[sqlstate]}: {message}"
        if sqlstate and sqlstate.startswith(_OPERATIONAL_CLASSES):
            return f"the database at {where} failed: {message} (SQLSTATE {sqlstate})"
        return None
    for cause in causes(exc):
        if isinstance(cause, (TimeoutError, sa_exc.TimeoutError)):
            return f"the database at {where} did not answer in time"
        if isinstance(cause, OSError):
            return f"cannot reach the database at {where}: {_reason(cause)}"
    return None


def _reason(error: OSError) -> str:
    # asyncio words a refused connection as "Connect call failed ('127.0.0.1', 1)"; the errno
    # says it plainly. Name lookups fail with negative errnos and a message of their own.
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


def database_address(database_url: str) -> str:
    """host:port/database of `database_url` (a socket folder for the host), without its user
    and password."""
    url = make_url(database_url)
    host = url.host or url.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = ",".join(host)
    return f"{host}:{url.port or 5432}/{url.database or ''}"


async def ensure_utf8(connection: AsyncConnection) -> None:
    """Refuse a database that cannot store every string an event may hold.

    Events are Unicode; in a database of another encoding a character it lacks fails the whole
    transaction, and with it every event of the request.
    """
    encoding = await connection.scalar(text("SHOW server_encoding"))
    if encoding != "UTF8":
        raise UnsuitableDatabase(
            f"the database's server encoding is {encoding}, but tokenpulse stores Unicode text "
            "and needs UTF8: create the database with ENCODING 'UTF8' TEMPLATE template0"
        )


@asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose reads all see one moment, though events (and prices) keep changing
    meanwhile: a read of several statements, such as the price boundaries and then the sums
    they split, answers for one state of the database."""
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="REPEATABLE READ")
        yield connection
