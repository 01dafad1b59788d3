"""The `tokenpulse` command: serve the API and apply migrations."""

import argparse
import asyncio
import logging
import os
import signal
import sys

import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine

from tokenpulse.database import async_url
from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.settings import Settings

log = logging.getLogger("tokenpulse")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenpulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    commands.add_parser("migrate", help="apply database migrations")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    settings = _load_settings()
    embedded = None
    if settings.database_url is not None:
        database_url = settings.database_url.get_secret_value()
    else:
        log.info("TOKENPULSE_DATABASE_URL is not set; starting the embedded PostgreSQL")
        embedded = start_embedded_postgres(settings.data_dir)
        database_url = embedded.url
    # uvicorn re-raises SIGTERM once it has shut down gracefully; exit normally through Python
    # then, so that the embedded server is stopped too instead of being left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        asyncio.run(_migrate(database_url))
        if args.command == "serve":
            _serve(args, settings, database_url)
        else:
            log.info("the database is at the newest migration")
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def _serve(args: argparse.Namespace, settings: Settings, database_url: str) -> None:
    # Worker processes build their own settings from the environment: hand them the database.
    os.environ["TOKENPULSE_DATABASE_URL"] = database_url
    uvicorn.run(
        "tokenpulse.app:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=int(settings.shutdown_grace.total_seconds()),
        proxy_headers=False,
        server_header=False,
    )


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = "_".join(str(part) for part in error["loc"]).upper()
            subject = f"TOKENPULSE_{where}: " if where else ""
            print(f"tokenpulse: invalid configuration: {subject}{error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


async def _migrate(database_url: str) -> None:
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as connection:
            await upgrade_to_head(connection)
    finally:
        await engine.dispose()
