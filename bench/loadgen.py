"""A lean HTTP/1.1 load generator: keep-alive connections, requests written as ready-made bytes.

httpx costs more CPU per request than the service it would measure, on a machine where client
and server share two cores; this client does only what a benchmark needs.
"""

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


DROPPED = 0
"""The status counted for a request whose connection closed before any answer came."""


class Connection:
    """One keep-alive connection; `send` writes a request and waits for the whole answer.

    A server may close a connection after an answer (say, a 503 sent before the body was read);
    the next request then goes out on a new one.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> "Connection":
        connection = cls(host, port)
        await connection._connect()
        return connection

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(*self._address, limit=2**20)

    async def send(self, request: bytes) -> tuple[int, bytes, dict[str, str]]:
        reused = self._writer is not None and not self._writer.is_closing()
        if not reused:
            await self._connect()
        head = await self._exchange(request)
        if head is None and reused:
            # The server closed the connection while it sat idle (uvicorn's keep-alive timeout),
            # before this request reached it: as any HTTP client does, send it again on a new one.
            await self._connect()
            head = await self._exchange(request)
        if head is None:
            return DROPPED, b"", {}
        assert self._reader is not None
        assert self._writer is not None
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self._writer.close()
        return int(status_line.split(" ", 2)[1]), body, headers

    async def _exchange(self, request: bytes) -> bytes | None:
        """The head of the answer, or None if the connection closed before any came."""
        assert self._reader is not None
        assert self._writer is not None
        try:
            self._writer.write(request)
            return await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self._writer.close()
            return None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()


@dataclass
class Latencies:
    seconds: list[float]

    def percentile(self, share: float) -> float:
        """In milliseconds."""
        return 1000 * percentile(self.seconds, share)

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p99(self) -> float:
        return self.percentile(0.99)


async def closed_loop(
    host: str, port: int, requests: Sequence[bytes], connections: int
) -> tuple[float, Latencies, dict[int, int]]:
    """Send every request as fast as the server answers, `connections` at a time.

    Returns the wall-clock seconds, each request's latency and the count of each status.
    """
    queue = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        connection = await Connection.open(host, port)
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                status, _, _ = await connection.send(request)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started, Latencies(latencies), statuses


async def open_loop(
    host: str, port: int, requests: Iterable[bytes], rate: float, connections: int
) -> tuple[Latencies, dict[int, int], list[bytes]]:
    """Send the requests at `rate` per second whatever the answers, over a pool of connections.

    Latency is counted from when a request was due, so a server that falls behind shows it.
    `requests` is read one at a time, as each falls due: it may be a generator that ends when
    something else says so. Returns latencies, statuses, and the bodies of the 200 answers.
    """
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await Connection.open(host, port))
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answers: list[bytes] = []

    async def one(request: bytes, due: float) -> None:
        connection = await pool.get()
        try:
            status, body, _ = await connection.send(request)
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            answers.append(body)

    start = time.perf_counter()
    tasks = []
    for index, request in enumerate(requests):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return Latencies(latencies), statuses, answers


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], share: float) -> float:
    """The value below which `share` of `values` lie (nan without any)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
