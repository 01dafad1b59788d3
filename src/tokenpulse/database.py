"""Connection pools to PostgreSQL, created per worker process at start-up."""

from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tokenpulse.settings import Settings


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


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database is unreachable or overloaded, not a bad statement."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, TimeoutError, sa_exc.TimeoutError)):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES:
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.orig is not None:
            current = current.orig
        else:
            current = current.__cause__ or current.__context__
    return False


def is_database_error(exc: BaseException) -> bool:
    """Whether `exc` came from the database or the way to it, rather than from our own code."""
    return isinstance(exc, sa_exc.SQLAlchemyError) or is_unavailable(exc)
