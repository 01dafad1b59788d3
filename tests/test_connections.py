"""The HTTP connection layer of a real `tokenpulse serve`, through raw sockets: heads that never
end are cut off, idle connections are closed, malformed HTTP is answered in the one JSON error
shape, and workers never outlive the process that started them."""

import json
import multiprocessing
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, Keys
from tests.servers import Server, running_server, start_server, stop_server
from tokenpulse import orphans
from tokenpulse.metrics import MULTIPROCESS_DIR

HEAD_TIMEOUT = 1
KEEPALIVE_TIMEOUT = 7
"""Longer than uvicorn's own 5 s, so that closing at the configured time shows it is the one."""
HANG = 20.0
"""How long something the server should do may take before the test calls it a hang: far beyond
every timeout above, as machines are noisy."""

HALF_A_HEAD = b"GET /healthz HTTP/1.1\r\nHost: tokenpulse\r\nX-Wait: "
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: tokenpulse\r\n\r\n"
REPO = Path(__file__).resolve().parents[1]


def serve_env(database_url: str) -> dict[str, str]:
    return {
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "TOKENPULSE_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
        **UNLIMITED_ENV,
    }


@pytest.fixture
def server(db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, env=serve_env(database_url)) as server:
        yield server


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=HANG)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; a hang raises TimeoutError."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # closed while bytes of ours were still arriving: what it sent before still counts
    return answer


def read_response(sock: socket.socket) -> bytes:
    """One answer with a Content-Length, leaving the connection open."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer ended: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(headers_of(head)["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the answer ended: {answer!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def trickle(sock: socket.socket, byte: bytes) -> bytes | None:
    """Send `byte` every half second until the server answers; what it sent until it closed, or
    None if it let the trickle go on for HANG seconds."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            sock.sendall(byte)
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([sock], [], [], 0.5)[0]:
            break
    else:
        return None
    return read_until_closed(sock)


def headers_of(head: bytes) -> dict[str, str]:
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def refusal(answer: bytes, status: int) -> dict[str, Any]:
    """The one error shape, in an answer that closes the connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), answer
    headers = headers_of(head)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error: dict[str, Any] = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    return error


@pytest.mark.process
def test_fifty_connections_that_stop_halfway_through_their_head_get_408_and_are_closed(
    server: Server,
) -> None:
    served: list[int] = []
    done = threading.Event()

    def a_normal_client() -> None:
        while not done.is_set():
            served.append(httpx.get(f"{server.url}/healthz", timeout=HANG).status_code)
            time.sleep(0.1)

    stalled = [connect(server) for _ in range(50)]
    client = threading.Thread(target=a_normal_client)
    try:
        for sock in stalled:
            sock.sendall(HALF_A_HEAD)
        client.start()
        answers = [read_until_closed(sock) for sock in stalled]
    finally:
        done.set()
        for sock in stalled:
            sock.close()
    client.join()

    for answer in answers:
        error = refusal(answer, 408)
        assert error == {
            "code": "request_timeout",
            "message": "the request line and headers did not arrive within 1 s",
        }
    assert served
    assert set(served) == {200}


@pytest.mark.process
def test_a_slowloris_trickling_its_head_a_byte_every_half_second_is_cut_off(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(HALF_A_HEAD)
        answer = trickle(sock, b"a")

    assert answer is not None, f"the trickle went on for {HANG:g} s"
    assert refusal(answer, 408)["code"] == "request_timeout"


@pytest.mark.process
def test_a_body_trickled_after_its_refusal_does_not_keep_the_connection_open(
    server: Server,
) -> None:
    with connect(server) as sock:
        # No key: refused before its body is read, which then comes a byte every half second.
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: tokenpulse\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        answer = read_response(sock)
        closed = trickle_until_closed(sock, b" ")

    assert answer.startswith(b"HTTP/1.1 401 "), answer
    # Said, so that a client does not send its next request down a connection being closed.
    assert headers_of(answer.split(b"\r\n\r\n", 1)[0]).get("connection") == "close", answer
    assert closed, f"the body went on trickling in for {HANG:g} s after its answer"


def trickle_until_closed(sock: socket.socket, byte: bytes) -> bool:
    """Send `byte` every half second; whether the server closed the connection within HANG."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        try:
            sock.sendall(byte)
            if select.select([sock], [], [], 0.5)[0] and not sock.recv(65536):
                return True
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False


@pytest.mark.process
def test_a_keep_alive_connection_whose_next_head_stops_halfway_gets_408_and_is_closed(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTHZ)
        first = read_response(sock)
        sock.sendall(HALF_A_HEAD)
        answer = read_until_closed(sock)

    assert first.startswith(b"HTTP/1.1 200 ")
    assert refusal(answer, 408)["code"] == "request_timeout"


@pytest.mark.process
def test_blank_lines_trickled_after_an_answer_do_not_keep_the_connection_open(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTHZ)
        first = read_response(sock)
        answer = trickle(sock, b"\r\n")

    assert first.startswith(b"HTTP/1.1 200 ")
    assert answer is not None, f"the trickle went on for {HANG:g} s"
    assert refusal(answer, 408)["code"] == "request_timeout"


@pytest.mark.process
def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Server) -> None:
    with connect(server) as sock:
        assert read_until_closed(sock) == b""


@pytest.mark.process
def test_an_idle_keep_alive_connection_is_closed_silently_after_the_keep_alive_timeout(
    server: Server,
) -> None:
    with connect(server) as sock:
        sock.sendall(HEALTHZ)
        first = read_response(sock)
        answered = time.monotonic()
        rest = read_until_closed(sock)
        idle = time.monotonic() - answered

    assert first.startswith(b"HTTP/1.1 200 ")
    assert rest == b""
    # Only a lower bound: a noisy machine can close it late, never early.
    assert idle > KEEPALIVE_TIMEOUT - 0.5


@pytest.mark.process
def test_stalled_heads_past_the_open_file_limit_do_not_lock_new_clients_out(
    server: Server,
) -> None:
    pid = server.process.pid
    open_files = len(os.listdir(f"/proc/{pid}/fd"))
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_files + 20, hard))
    stalled = [connect(server) for _ in range(60)]
    try:
        for sock in stalled:
            sock.sendall(HALF_A_HEAD)
        # Past the limit a new connection is dropped as soon as it is accepted, so the client
        # tries again, as gateways do, until the stalled ones are cut off.
        deadline = time.monotonic() + HANG
        answer = None
        while answer is None and time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{server.url}/healthz", timeout=HANG)
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        for sock in stalled:
            sock.close()

    assert answer is not None, f"no new client was served for {HANG:g} s"
    assert answer.status_code == 200


MALFORMED = {
    "content-length-that-is-not-a-number": (
        b"POST /v1/events HTTP/1.1\r\nHost: tokenpulse\r\nContent-Type: application/json\r\n"
        b"Content-Length: abc\r\n\r\n{}",
        "invalid character in Content-Length",
    ),
    "body-longer-than-its-length": (
        b"POST /v1/events HTTP/1.1\r\nHost: tokenpulse\r\nContent-Type: application/json\r\n"
        b'Content-Length: 2\r\n\r\n{"events": []}',
        "invalid method encountered",
    ),
    "garbage-request-line": (b"this is not http at all\r\n\r\n", "invalid method encountered"),
    "header-name-with-a-space": (
        b"GET /healthz HTTP/1.1\r\nHost: tokenpulse\r\nBad Header: x\r\n\r\n",
        "invalid header token",
    ),
    "two-content-lengths": (
        b"POST /v1/events HTTP/1.1\r\nHost: tokenpulse\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        "duplicate Content-Length",
    ),
    "raw-bytes-in-the-path": (
        b"GET /\xff\xfe HTTP/1.1\r\nHost: tokenpulse\r\n\r\n",
        "invalid char in url path",
    ),
}


@pytest.mark.parametrize(("request_bytes", "reason"), MALFORMED.values(), ids=MALFORMED)
@pytest.mark.process
def test_malformed_http_gets_a_json_400_that_says_what_is_wrong(
    server: Server, request_bytes: bytes, reason: str
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_until_closed(sock)

    assert refusal(answer, 400) == {
        "code": "bad_request",
        "message": f"the request is not valid HTTP/1.1: {reason}",
    }


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    variables = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    pairs = (variable.partition("=") for variable in variables if variable)
    return {name: value for name, _, value in pairs}


def wait_for_exit(pids: list[int]) -> list[int]:
    """The processes among `pids` still running after HANG seconds (none, at best)."""
    deadline = time.monotonic() + HANG
    while (left := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.process
def test_a_kill_9_of_serve_ends_its_workers_and_a_new_serve_binds_the_same_port(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = serve_env(database_url)
    server = start_server(tmp_path, "--workers", "2", env=env)
    # The two workers, and whatever else it started (multiprocessing's resource tracker).
    started = children(server.process.pid)
    # What the killed process would have removed at its exit.
    metrics_dir = environment_of(started[0])[MULTIPROCESS_DIR]
    try:
        assert len(started) >= 2
        server.process.kill()
        server.process.wait()

        assert wait_for_exit(started) == []
        again = start_server(tmp_path, env=env, port=server.port)
        try:
            assert again.process.poll() is None
            assert httpx.get(f"{again.url}/healthz", timeout=HANG).status_code == 200
        finally:
            stop_server(again)
        assert "Address already in use" not in server.log()
    finally:
        for pid in wait_for_exit(started):
            os.kill(pid, signal.SIGKILL)  # orphans this test made: never left serving
        shutil.rmtree(metrics_dir, ignore_errors=True)


def watched_worker() -> None:
    """A spawned process that watches its parent only by polling, as where the kernel cannot be
    asked to signal a parent's death."""
    parent = multiprocessing.parent_process()
    assert parent is not None
    assert parent.pid is not None
    orphans.watch_parent(parent.pid, poll_seconds=0.1)
    print("watching", flush=True)
    time.sleep(HANG * 3)


SPAWNING_PARENT = """
import multiprocessing, time
from tests.test_connections import watched_worker
worker = multiprocessing.get_context("spawn").Process(target=watched_worker)
worker.start()
print(worker.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.process
def test_a_worker_whose_parent_dies_stops_by_itself_by_watching_its_parent_id() -> None:
    worker = None
    with subprocess.Popen(
        # Unbuffered, so that a line not read yet is still there for select() to see.
        [sys.executable, "-c", SPAWNING_PARENT],
        cwd=REPO,
        stdout=subprocess.PIPE,
        bufsize=0,
    ) as parent:
        assert parent.stdout is not None
        try:
            worker = int(parent.stdout.readline())
            assert select.select([parent.stdout], [], [], HANG)[0], "the worker never started"
            assert parent.stdout.readline() == b"watching\n"
            parent.kill()
            parent.wait()

            assert wait_for_exit([worker]) == []
        finally:
            parent.kill()
            if worker is not None and running(worker):
                os.kill(worker, signal.SIGKILL)
