"""Worker processes end with the `serve` process that started them: a worker left behind by a
`kill -9` of its parent would go on serving on the port, and keep a new `serve` from binding it."""

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 1.0
"""How often a worker looks for its parent where the kernel cannot be asked to say it died."""

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent() -> None:
    """In a worker that uvicorn's supervisor spawned, stop as on SIGTERM once the supervisor is
    gone. A process that nothing spawned, `serve` with one worker, is left alone: its parent is
    a shell or a service manager, whose end is no reason to stop."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    # SIGTERM, the signal of an ordinary stop: the worker finishes the requests in flight, whose
    # clients are still connected, and lets go of the port.
    if not _signal_when_parent_dies(signal.SIGTERM):
        watch_parent(parent.pid)
    elif os.getppid() != parent.pid:
        # The parent died before the kernel was asked to tell: it never will.
        os.kill(os.getpid(), signal.SIGTERM)


def watch_parent(parent_pid: int, *, poll_seconds: float = PARENT_POLL_SECONDS) -> threading.Thread:
    """Send this process SIGTERM once `parent_pid` is no longer its parent: an orphan is adopted
    by another process, so its parent id changes."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        log.warning("the process that started this worker is gone; the worker stops")
        os.kill(os.getpid(), signal.SIGTERM)

    watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    watcher.start()
    return watcher


def _signal_when_parent_dies(signum: int) -> bool:
    """Ask Linux to send `signum` when the parent ends; whether it will."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return bool(prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
