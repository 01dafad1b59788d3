"""Running `tokenpulse serve` as a real process, for tests of what only a real server shows."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_SECONDS = 60.0


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The test run's environment without any TOKENPULSE_* variable, and then `env`: a child
    process sees the settings its test gives it, and none of the run's own."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOKENPULSE_")}
    return {**inherited, **(env or {})}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    output_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the server wrote on stderr: its log."""
        return self.log_path.read_text(errors="replace")

    def output(self) -> str:
        """What the server wrote on stdout: only what is meant for the operator's eyes."""
        return self.output_path.read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


@contextmanager
def running_server(
    log_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`tokenpulse serve` on a free port, ready when this yields, stopped afterwards."""
    server = start_server(log_dir, *args, env=env)
    try:
        yield server
    finally:
        stop_server(server)


def start_server(
    log_dir: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> Server:
    """`tokenpulse serve` on `port` (default: a free one), ready when this returns.

    The server sees no TOKENPULSE_* variable from the test run's environment, only `env`. Servers
    started again on one port share its log and output, each life after the last.
    """
    port = port or free_port()
    log_path = log_dir / f"server-{port}.log"
    output_path = log_dir / f"server-{port}.out"
    with log_path.open("ab") as log, output_path.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tokenpulse", "serve", "--port", str(port), *args],
            env=child_environment(env),
            stdout=output,
            stderr=log,
        )
    server = Server(process, port, log_path, output_path)
    try:
        _wait_until_ready(server)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    """SIGTERM, and SIGKILL if the server has not exited 30 s later."""
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"tokenpulse serve exited early:\n{server.output()}{server.log()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"tokenpulse serve was not ready in time:\n{server.output()}{server.log()}")
