"""Build the wheel from what the Dockerfile copies, install it alone in a scratch venv (no extras),
and check that it refuses to start without a database, migrates one, and serves it.

The database is a scratch one on TOKENPULSE_TEST_DATABASE_URL's server, or an embedded
PostgreSQL of its own, started from the development venv this runs in. Everything it makes lives
in one temporary folder, removed at the end, whatever happens.
"""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tokenpulse.embedded import start_embedded_postgres
from tokenpulse.migrations import head_revision

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = ROOT / "src" / "tokenpulse" / "migrations"
INSTALL_TIMEOUT_SECONDS = 600
COMMAND_TIMEOUT_SECONDS = 60
READY_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 30


class CheckFailed(Exception):
    """What the wheel got wrong, for the CI log."""


def main() -> int:
    # A CI run that is stopped still stops the server and removes the scratch folder.
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGHUP, _exit)
    try:
        with tempfile.TemporaryDirectory(prefix="tokenpulse-wheel-") as folder:
            check(Path(folder))
    except CheckFailed as failed:
        print(f"wheel check failed: {failed}", file=sys.stderr)
        return 1
    return 0


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


@dataclass(frozen=True)
class User:
    """The folders a command may take for the user's own, where the default data folder is."""

    home: Path
    xdg_data_home: Path


def check(scratch: Path) -> None:
    wheel = build_wheel(scratch)
    check_contents(wheel)
    print(f"built {wheel.name}; installing it in a scratch venv", flush=True)
    venv = install(wheel, scratch / "venv")
    workdir = scratch / "workdir"
    workdir.mkdir()
    user = User(scratch / "home", scratch / "xdg")
    user.home.mkdir()
    user.xdg_data_home.mkdir()
    check_refusal_without_database(venv, workdir, user)
    with scratch_database(scratch) as url:
        run(venv, "migrate", url=url, cwd=workdir, user=user)
        check_migrated(url)
        serve_briefly(venv, url, workdir, user)
    print("the wheel migrates a database and serves it", flush=True)


def build_wheel(scratch: Path) -> Path:
    """The wheel of exactly what the Dockerfile copies: pyproject.toml, README.md and src/."""
    source = scratch / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    dist = scratch / "dist"
    pip = [sys.executable, "-m", "pip", "--quiet"]
    _checked([*pip, "wheel", "--no-deps", "--wheel-dir", str(dist), str(source)], scratch)
    wheels = list(dist.glob("tokenpulse-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"expected one wheel in {dist}, found {wheels}")
    return wheels[0]


def check_contents(wheel: Path) -> None:
    """Every migration script is in the wheel, not only the modules of the package."""
    expected = {
        f"tokenpulse/migrations/{path.relative_to(MIGRATIONS).as_posix()}"
        for pattern in ("*.py", "script.py.mako", "versions/*.py")
        for path in MIGRATIONS.glob(pattern)
    }
    with zipfile.ZipFile(wheel) as archive:
        missing = expected - set(archive.namelist())
    if missing:
        raise CheckFailed(f"{wheel.name} lacks {', '.join(sorted(missing))}")


def install(wheel: Path, venv: Path) -> Path:
    # This venv's pip installs into the scratch one, which needs no pip of its own; compiling
    # every dependency's bytecode up front would be most of the install's own time.
    _checked([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv.parent)
    pip = [sys.executable, "-m", "pip", "--quiet", "--python", str(venv / "bin" / "python")]
    _checked([*pip, "install", "--no-compile", str(wheel)], venv)
    return venv


def check_refusal_without_database(venv: Path, workdir: Path, user: User) -> None:
    """Without the `embedded` extra and without a database URL: one line saying what to do,
    and no data folder made, neither in the working directory nor in the user's."""
    result = run(venv, "migrate", url=None, cwd=workdir, user=user, check=False)
    if result.returncode != 1 or "tokenpulse[embedded]" not in result.stderr:
        raise CheckFailed(
            f"`tokenpulse migrate` with no database exited {result.returncode}:\n{result.stderr}"
        )
    for folder in (workdir, user.home, user.xdg_data_home):
        if any(folder.iterdir()):
            raise CheckFailed(f"`tokenpulse migrate` with no database left files in {folder}")


@contextmanager
def scratch_database(scratch: Path) -> Iterator[str]:
    server = os.environ.get("TOKENPULSE_TEST_DATABASE_URL")
    if not server:
        embedded = start_embedded_postgres(scratch / "embedded")
        try:
            yield embedded.url
        finally:
            embedded.stop()
        return
    name = f"tokenpulse_wheel_{uuid.uuid4().hex[:12]}"
    admin = make_url(server).set(drivername="postgresql")
    asyncio.run(_execute(admin.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(
            _execute(
                admin.render_as_string(hide_password=False),
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            )
        )


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def check_migrated(url: str) -> None:
    """At the newest migration of the source tree (this venv's tokenpulse is the checkout): a
    wheel without its migrations would migrate nothing, and exit 0 all the same."""
    at, newest = asyncio.run(_revision(url)), head_revision()
    if at != newest:
        raise CheckFailed(f"`tokenpulse migrate` left the database at {at}, not at {newest}")


async def _revision(url: str) -> str | None:
    connection = await asyncpg.connect(url)
    try:
        revision: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
        return revision
    finally:
        await connection.close()


def serve_briefly(venv: Path, url: str, workdir: Path, user: User) -> None:
    port = _free_port()
    log = workdir / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(venv / "bin" / "tokenpulse"), "serve", "--port", str(port)],
            env=_environment(url, user),
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_ready(server, base, log)
        # The dashboard's files are package data too.
        page = httpx.get(f"{base}/", timeout=5)
        if page.status_code != 200:
            raise CheckFailed(f"GET / answered {page.status_code}:\n{log.read_text()}")
    finally:
        _stop(server)
    if server.returncode != 0:
        raise CheckFailed(f"serve exited {server.returncode} on SIGTERM:\n{log.read_text()}")


def _wait_until_ready(server: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise CheckFailed(f"serve exited {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise CheckFailed(
        f"/readyz did not answer 200 in {READY_TIMEOUT_SECONDS} s:\n{log.read_text()}"
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run(
    venv: Path, command: str, *, url: str | None, cwd: Path, user: User, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(venv / "bin" / "tokenpulse"), command],
        env=_environment(url, user),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )
    if check and result.returncode != 0:
        raise CheckFailed(f"`tokenpulse {command}` exited {result.returncode}:\n{result.stderr}")
    return result


def _environment(url: str | None, user: User) -> dict[str, str]:
    """This environment less every TOKENPULSE_* setting, with only the database URL given, and
    the scratch user's folders for the real ones."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    environment["HOME"] = str(user.home)
    environment["XDG_DATA_HOME"] = str(user.xdg_data_home)
    if url is not None:
        environment["TOKENPULSE_DATABASE_URL"] = url
    return environment


def _checked(command: list[str], cwd: Path) -> None:
    result = subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    sys.exit(main())
