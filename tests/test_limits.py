"""Limits that keep one caller from exhausting the service: rates, bodies, headers, origins."""

import gzip
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, Ticker, bearer
from tests.factories import event
from tests.servers import Server, running_server

MiB = 1024 * 1024


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_go_on(
    make_client: ClientFactory, keys: Keys, monotonic: Ticker
) -> None:
    eager = await keys.create("read")
    patient = await keys.create("read")
    # A burst of five, refilled at one request every 20 s.
    async with make_client(rate_limit_read=0.05, rate_limit_burst_seconds=100) as client:
        answers = [
            (await client.get("/v1/totals?window=1h", headers=bearer(eager))).status_code
            for _ in range(6)
        ]
        limited = await client.get("/v1/totals?window=1h", headers=bearer(eager))
        other = await client.get("/v1/totals?window=1h", headers=bearer(patient))
        monotonic.advance(19)
        still_limited = await client.get("/v1/totals?window=1h", headers=bearer(eager))
        monotonic.advance(2)
        refilled = [
            (await client.get("/v1/totals?window=1h", headers=bearer(eager))).status_code
            for _ in range(2)
        ]

    assert answers == [200] * 5 + [429]
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "20"
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other.status_code == 200
    assert still_limited.status_code == 429
    assert refilled == [200, 429], "21 s on, one request's worth has come back, and no more"


async def test_cors_answers_only_configured_origins_and_never_allows_credentials(
    make_client: ClientFactory,
) -> None:
    preflight = {
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization, tokenpulse-consistency",
    }
    async with make_client(cors_origins=["https://dash.example"]) as client:
        allowed = await client.options(
            "/v1/totals", headers={"Origin": "https://dash.example", **preflight}
        )
        simple = await client.get("/healthz", headers={"Origin": "https://dash.example"})
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    async with make_client() as client:
        default = await client.get("/healthz", headers={"Origin": "https://dash.example"})

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "tokenpulse-consistency" in allowed.headers["access-control-allow-headers"].lower()
    assert simple.headers["access-control-allow-origin"] == "https://dash.example"
    # A dashboard on another origin may see which database answered it.
    assert "tokenpulse-read-from" in simple.headers["access-control-expose-headers"].lower()
    for response in (allowed, simple, other, default):
        assert "access-control-allow-credentials" not in response.headers
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in default.headers


@pytest.fixture
def server(db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path) -> Iterator[Server]:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, env=env) as server:
        yield server


def resident_kib(server: Server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def exchange(server: Server, head: bytes, body: Iterable[bytes] = ()) -> bytes:
    """Send a raw request (the body as it comes, stopping if the server answers) and the answer."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body ended, as it should
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and b"}" in answer:
                break
        return answer


def ingest_head(keys: Keys, *headers: str) -> bytes:
    lines = [
        "POST /v1/events HTTP/1.1",
        "Host: tokenpulse",
        f"Authorization: Bearer {keys.admin}",
        "Content-Type: application/x-ndjson",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.process
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    server: Server, keys: Keys
) -> None:
    answer = exchange(server, ingest_head(keys, f"Content-Length: {50 * MiB}"))

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"larger than the limit of 10,485,760 bytes" in answer


@pytest.mark.process
def test_a_chunked_body_over_the_limit_is_refused_while_memory_stays_flat(
    server: Server, keys: Keys
) -> None:
    line = (httpx.Request("POST", "/", json=event()).content + b"\n") * 1000
    chunk = f"{len(line):x}\r\n".encode() + line + b"\r\n"
    before = resident_kib(server)

    answer = exchange(
        server,
        ingest_head(keys, "Transfer-Encoding: chunked"),
        (chunk for _ in range(200 * MiB // len(line))),
    )

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert resident_kib(server) - before < 64 * 1024


@pytest.mark.process
def test_a_gzip_bomb_is_refused_quickly_while_memory_stays_flat(server: Server, keys: Keys) -> None:
    bomb = gzip.compress(b"\n" * (512 * MiB), compresslevel=9)
    assert len(bomb) < MiB
    before = resident_kib(server)

    answer = exchange(
        server,
        ingest_head(keys, "Content-Encoding: gzip", f"Content-Length: {len(bomb)}"),
        iter([bomb]),
    )

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert resident_kib(server) - before < 64 * 1024


@pytest.mark.process
def test_request_headers_over_16_kib_are_refused_with_431(server: Server, keys: Keys) -> None:
    small = exchange(
        server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
    )
    large = exchange(
        server, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    )
    huge = exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Pad: ",
        (b"a" * 65536 for _ in range(1024)),
    )

    assert small.startswith(b"HTTP/1.1 200 ")
    assert large.startswith(b"HTTP/1.1 431 ")
    assert huge.startswith(b"HTTP/1.1 431 ")
