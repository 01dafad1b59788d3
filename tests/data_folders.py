"""Folders for the embedded PostgreSQL's data in tests, and what tells whether it runs there."""

import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

WAIT_TIMEOUT_SECONDS = 60.0


@contextmanager
def scratch_folder() -> Iterator[Path]:
    """An empty folder, removed afterwards with every embedded server left running under it.

    It lies outside pytest's own temporary folders, whose root every pytest run makes private
    again (which would lock the database's system user out of its data), and which keep the
    last runs' files: a data folder is tens of megabytes.
    """
    with tempfile.TemporaryDirectory(prefix="tokenpulse-embedded-") as folder:
        root = Path(folder).resolve()
        try:
            yield root
        finally:
            for pid_file in root.rglob("postmaster.pid"):
                stop_server_in(pid_file.parent.parent)


def stop_server_in(data_dir: Path) -> None:
    """A fast shutdown of the server running in `data_dir`, if one runs."""
    if (pid := postmaster_pid(data_dir)) is not None:
        os.kill(pid, signal.SIGINT)
        wait_until(lambda: postmaster_pid(data_dir) is None, "a left-over server to stop")


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the PostgreSQL server running in `data_dir`, if one runs."""
    try:
        pid = int((data_dir / "pgdata" / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
        return None
    return pid


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
