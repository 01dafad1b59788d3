"""The `tokenpulse` command: serve the API, apply migrations, manage API keys, launches and
prices, and simulate a launch day against a server."""

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
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from tokenpulse.database import async_url, describe_failure, ensure_utf8
from tokenpulse.embedded import EmbeddedFailed, embedded_postgres, has_database, is_installed
from tokenpulse.errors import InvalidParameters
from tokenpulse.exports import commands as export_commands
from tokenpulse.http_protocol import BoundedHeadHttpProtocol
from tokenpulse.instant_input import instant
from tokenpulse.instants import format_rfc3339
from tokenpulse.keys.names import control_problem
from tokenpulse.keys.store import create_key, has_keys, list_keys, revoke_key
from tokenpulse.launches.rules import launched_at_problem
from tokenpulse.launches.store import delete_launch, list_launches, put_launch
from tokenpulse.logs import FIELDS, LogLevel, configure_logging, logging_config
from tokenpulse.metrics import MULTIPROCESS_DIR
from tokenpulse.migrations import upgrade_to_head
from tokenpulse.model_names import model_problem
from tokenpulse.prices import commands as prices_commands
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings
from tokenpulse.simulator import run as simulator
from tokenpulse.terminal import listing_row, printable
from tokenpulse.text import STRING_MAX, text_problem

log = logging.getLogger("tokenpulse")

FIRST_KEY_LOCK = 0x746F6B656E71  # any constant shared by every instance
OLD_DATA_DIR = Path(".tokenpulse")
"""Where earlier versions kept the embedded data by default: in the current directory."""
DATA_COMMANDS = ("keys", "launches", "prices", "export")
"""Commands that change or show what a database holds: refused where there is none yet."""


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
    with _database(settings, args.command) as database_url:
        with _refused_by_database(database_url):
            asyncio.run(_migrate(database_url, settings))
        if args.command == "serve":
            with _refused_by_database(database_url):
                asyncio.run(_create_first_admin_key(database_url, settings))
            _serve(args, settings, database_url)
        elif args.command == "migrate":
            log.info("the database is at the newest migration")
        elif args.command == "launches":
            with _refused_by_database(database_url):
                return asyncio.run(_launches(args, database_url, settings))
        elif args.command == "prices":
            with _refused_by_database(database_url):
                return asyncio.run(
                    prices_commands.run(
                        args, lambda: _transaction(database_url, settings), settings.currency
                    )
                )
        elif args.command == "export":
            with _refused_by_database(database_url):
                return asyncio.run(
                    export_commands.run(
                        args, lambda: _transaction(database_url, settings), now=datetime.now(UTC)
                    )
                )
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
    """`keys`, `launches` and `prices` print what they were asked for; only warnings and errors
    join it."""
    if command in DATA_COMMANDS and settings.log_level in ("debug", "info"):
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
    launches = commands.add_parser("launches", help="manage launches in the database directly")
    launch_actions = launches.add_subparsers(dest="action", required=True)
    launch_actions.add_parser("list", help="list launches")
    put = launch_actions.add_parser("set", help="create a model's launch, or move it")
    put.add_argument("model")
    put.add_argument("--at", help="when it went live, RFC 3339 with an offset (default: now)")
    remove = launch_actions.add_parser("delete", help="delete a model's launch (not its events)")
    remove.add_argument("model")
    prices_commands.add_arguments(
        commands.add_parser("prices", help="manage price versions in the database directly")
    )
    export_commands.add_arguments(
        commands.add_parser("export", help="write stored events as NDJSON from the database")
    )
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
def _database(settings: Settings, command: str) -> Iterator[str]:
    """The database URL; without one configured, the embedded PostgreSQL for the duration.

    Every command is a user of the embedded server while it runs, and the last user to go stops
    it: `tokenpulse keys …` beside a running `serve`, or a second `serve`, leaves it running.
    `serve` also starts it again should it stop while serving. Each command names the data
    folder on stderr.
    """
    if settings.database_url is not None:
        yield settings.database_url.get_secret_value()
        return
    if not is_installed():
        raise _Refused(
            "TOKENPULSE_DATABASE_URL is not set, and the embedded PostgreSQL is not installed: "
            "set it to your database's postgresql:// URL, or install 'tokenpulse[embedded]'"
        )
    try:
        data_dir = settings.embedded_data_dir()
    except ValueError as missing:
        raise _Refused(str(missing)) from None
    fields = {FIELDS: {"data_dir": str(data_dir)}}
    if not has_database(data_dir):
        _refuse_a_new_database(settings, data_dir, command)
        log.warning("creating a new embedded database in %s", data_dir, extra=fields)
    elif command in DATA_COMMANDS:
        # Their log shows only warnings: the folder is said in a plain line, as their answers are.
        print(f"tokenpulse: using the embedded PostgreSQL in {data_dir}", file=sys.stderr)
    else:
        log.info("using the embedded PostgreSQL in %s", data_dir, extra=fields)
    try:
        with embedded_postgres(data_dir, keep_running=command == "serve") as embedded:
            yield embedded.url
    except EmbeddedFailed as failed:
        raise _Refused(str(failed)) from None


def _refuse_a_new_database(settings: Settings, data_dir: Path, command: str) -> None:
    """A data folder with no database yet, where the user may have meant an existing one: `keys`
    and `launches` refuse it rather than start an empty database that no server knows, and every
    command refuses it while the folder of earlier versions' default holds one."""
    old = OLD_DATA_DIR.resolve()
    if settings.data_dir is None and old != data_dir and has_database(old):
        raise _Refused(
            f"there is no embedded database in {data_dir}, but there is one in {old}, where "
            f"earlier versions kept it: set TOKENPULSE_DATA_DIR={old} to use it, or move that "
            f"folder to {data_dir}"
        )
    if command in DATA_COMMANDS:
        raise _Refused(
            f"there is no embedded database in {data_dir}: start one with `tokenpulse serve` or "
            "`tokenpulse migrate`, or set TOKENPULSE_DATA_DIR to the folder of the one you mean"
        )


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


async def _launches(args: argparse.Namespace, database_url: str, settings: Settings) -> int:
    if args.action == "list":
        async with _transaction(database_url, settings) as connection:
            launches = await list_launches(connection)
        print("model\tlaunched_at")
        for launch in launches:
            print(listing_row(launch.as_json().values()))
        return 0
    model = printable(args.model)
    if args.action == "set":
        try:
            launched_at = _launch_instant(args.model, args.at)
        except _Refused as refused:
            print(f"tokenpulse: {refused}", file=sys.stderr)
            return 2
        async with _transaction(database_url, settings) as connection:
            launch, created = await put_launch(connection, args.model, launched_at)
        at = format_rfc3339(launch.launched_at)
        done = f"launched {model} at {at}" if created else f"moved {model}'s launch to {at}"
        print(done, file=sys.stderr)
        return 0
    async with _transaction(database_url, settings) as connection:
        deleted = await delete_launch(connection, args.model)
    if deleted is None:
        print(f"tokenpulse: no launch is set for {model}", file=sys.stderr)
        return 1
    print(f"deleted {model}'s launch, at {format_rfc3339(deleted.launched_at)}", file=sys.stderr)
    return 0


def _launch_instant(model: str, at: str | None) -> datetime:
    """When `tokenpulse launches set` launches `model`, checked as `PUT /v1/launches` checks it."""
    if (problem := model_problem(model)) is not None:
        raise _Refused(f"the model name {problem}")
    now = datetime.now(UTC)
    try:
        launched_at = now if at is None else instant("--at", at)
    except InvalidParameters as invalid:
        raise _Refused(invalid.message) from None
    assert launched_at is not None
    if (problem := launched_at_problem(launched_at, now)) is not None:
        raise _Refused(f"--at {problem}")
    return launched_at


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
