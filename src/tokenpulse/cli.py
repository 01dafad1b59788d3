"""The `tokenpulse` command: serve the API, apply migrations, manage API keys, and simulate a
launch day against a server."""

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tokenpulse.database import async_url, describe_failure, ensure_utf8
from tokenpulse.embedded import EmbeddedFailed, embedded_postgres
from tokenpulse.http_protocol import BoundedHeadHttpProtocol
from tokenpulse.keys.names import control_problem, listing_row
from tokenpulse.keys.scopes import Scope
from tokenpulse.keys.store import create_key, has_keys, list_keys, revoke_key
from tokenpulse.logs import FIELDS, LogLevel, configure_logging, logging_config
from tokenpulse.metrics import MULTIPROCESS_DIR
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.settings import Settings
from tokenpulse.simulator import run as simulator
from tokenpulse.text import STRING_MAX, text_problem

log = logging.getLogger("tokenpulse")

FIRST_KEY_LOCK = 0x746F6B656E71  # any constant shared by every instance


class _Refused(Exception):
    """What stops a command that cannot go on, in one line for the operator (no traceback)."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        # A client of a server over HTTP: no settings, no database.
        return simulator.simulate(args)
    settings = _load_settings()
    configure_logging(settings.log_format, _log_level(settings, args.command))
    # uvicorn re-raises SIGTERM once it has shut down gracefully; exit normally through Python
    # then, so that the embedded server is stopped too instead of being left running.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    # Closing the terminal sends SIGHUP, whose default is to die on the spot and leave the
    # embedded server running: it stops the command as SIGTERM does. (With several workers,
    # uvicorn's supervisor takes SIGHUP for itself, as the signal to restart its workers.)
    signal.signal(signal.SIGHUP, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))
    try:
        return _run(args, settings)
    except _Refused as refused:
        print(f"tokenpulse: {refused}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, settings: Settings) -> int:
    with _database(settings, serving=args.command == "serve") as database_url:
        with _refused_by_database(database_url):
            asyncio.run(_migrate(database_url, settings))
        if args.command == "serve":
            with _refused_by_database(database_url):
                asyncio.run(_create_first_admin_key(database_url, settings))
            _serve(args, settings, database_url)
        elif args.command == "migrate":
            log.info("the database is at the newest migration")
        else:
            with _refused_by_database(database_url):
                return asyncio.run(_keys(args, database_url, settings))
    return 0


@contextmanager
def _refused_by_database(database_url: str) -> Iterator[None]:
    """An unreachable, full or unsuitable database is the operator's to fix: say what is wrong
    in one line. Anything else is a fault of tokenpulse, and keeps its traceback."""
    try:
        yield
    except Exception as exc:
        if (problem := describe_failure(exc, database_url)) is None:
            raise
        raise _Refused(problem) from None


def _log_level(settings: Settings, command: str) -> LogLevel:
    """`keys` prints what it was asked for on stdout; only warnings and errors join it."""
    if command == "keys" and settings.log_level in ("debug", "info"):
        return "warning"
    return settings.log_level


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tokenpulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    commands.add_parser("migrate", help="apply database migrations")
    keys = commands.add_parser("keys", help="manage API keys in the database directly")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print only its secret")
    create.add_argument("--scope", required=True, choices=[scope.value for scope in Scope])
    create.add_argument("--tenant", help="bind the key to this tenant (default: all tenants)")
    create.add_argument("--name", help="what the key is for (default: its scope)")
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key")
    revoke.add_argument("id")
    simulate = commands.add_parser(
        "simulate",
        help="send a seeded launch day to a server and check its totals against what it acked",
    )
    simulator.add_arguments(simulate)
    return parser


def _load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = "_".join(str(part) for part in error["loc"]).upper()
            subject = f"TOKENPULSE_{where}: " if where else ""
            print(f"tokenpulse: invalid configuration: {subject}{error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def _database(settings: Settings, *, serving: bool) -> Iterator[str]:
    """The database URL; without one configured, the embedded PostgreSQL for the duration.

    Every command is a user of the embedded server while it runs, and the last user to go stops
    it: `tokenpulse keys …` beside a running `serve`, or a second `serve`, leaves it running.
    `serve` also starts it again should it stop while serving.
    """
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    log.info("TOKENPULSE_DATABASE_URL is not set; using the embedded PostgreSQL")
    try:
        with embedded_postgres(settings.data_dir, keep_running=serving) as embedded:
            yield embedded.url
    except EmbeddedFailed as failed:
        raise _Refused(str(failed)) from None


@asynccontextmanager
async def _transaction(database_url: str, settings: Settings) -> AsyncIterator[AsyncConnection]:
    """One transaction on a connection of its own, committed when the block ends."""
    engine = create_async_engine(
        async_url(database_url),
        pool_size=1,
        max_overflow=0,
        connect_args={"timeout": settings.db_connect_timeout.total_seconds()},
    )
    try:
        async with engine.begin() as connection:
            yield connection
    finally:
        await engine.dispose()


async def _migrate(database_url: str, settings: Settings) -> None:
    async with _transaction(database_url, settings) as connection:
        await ensure_utf8(connection)
        await upgrade_to_head(connection)


async def _create_first_admin_key(database_url: str, settings: Settings) -> None:
    """On the very first start, an admin key, printed this once: there is no other way in."""
    async with _transaction(database_url, settings) as connection:
        await connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({FIRST_KEY_LOCK})")
        if await has_keys(connection):
            return
        created = await create_key(connection, name="first admin", scope=Scope.ADMIN, tenant=None)
    # The secret goes to stdout, to the operator, and never into the log on stderr.
    log.warning(
        "no API key existed, so an admin key was created; its secret is on standard output, "
        "shown only now",
        extra={FIELDS: {"key_id": created.key.id}},
    )
    print(
        "tokenpulse: no API key existed, so this admin key was created. It is shown only now;\n"
        f"keep it safe:\n\n    {created.token}\n",
        flush=True,
    )


async def _keys(args: argparse.Namespace, database_url: str, settings: Settings) -> int:
    if args.action == "create" and (problem := _create_problem(args)):
        print(f"tokenpulse: {problem}", file=sys.stderr)
        return 2
    async with _transaction(database_url, settings) as connection:
        if args.action == "create":
            scope = Scope(args.scope)
            created = await create_key(
                connection, name=args.name or scope.value, scope=scope, tenant=args.tenant
            )
            print(created.token)
        elif args.action == "list":
            print("id\tname\tscope\ttenant\tcreated_at\trevoked_at")
            for key in await list_keys(connection):
                print(listing_row(key.as_json().values()))
        else:
            revoked = await revoke_key(connection, args.id)
            if revoked is None:
                print(f"tokenpulse: there is no key {args.id}", file=sys.stderr)
                return 1
            print(f"revoked {revoked.id}", file=sys.stderr)
    return 0


def _create_problem(args: argparse.Namespace) -> str | None:
    for option, value in (("--tenant", args.tenant), ("--name", args.name)):
        if value is None:
            continue
        if not value or len(value) > STRING_MAX or text_problem(value):
            return f"{option} must be 1 to {STRING_MAX} characters of text"
        if problem := control_problem(value):
            return f"{option} {problem}"
    return None


def _serve(args: argparse.Namespace, settings: Settings, database_url: str) -> None:
    # Worker processes build their own settings from the environment: hand them the database.
    os.environ["TOKENPULSE_DATABASE_URL"] = database_url
    metrics_dir = None
    if args.workers > 1:
        metrics_dir = tempfile.mkdtemp(prefix="tokenpulse-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
    log.info(
        "serving on http://%s:%d",
        args.host,
        args.port,
        extra={FIELDS: {"host": args.host, "port": args.port, "workers": args.workers}},
    )
    try:
        uvicorn.run(
            "tokenpulse.app:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            http=BoundedHeadHttpProtocol,
            timeout_keep_alive=settings.keepalive_timeout,
            timeout_graceful_shutdown=int(settings.shutdown_grace.total_seconds()),
            proxy_headers=False,
            server_header=False,
            log_config=logging_config(settings.log_format, settings.log_level),
            # The access layer logs every request, with its id, route and caller.
            access_log=False,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
