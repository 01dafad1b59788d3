"""A real webhook endpoint for tests: an HTTP server on 127.0.0.1, in a thread of its own, that
keeps every request it is sent and answers each as its test says."""

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from standardwebhooks.webhooks import Webhook

from tests.servers import free_port

Answer = int | Literal["hold", "trickle"]
"""A status to answer; `hold`: answer 200 only once the receiver stops; `trickle`: send the
status line at once and a header line every TRICKLE_SECONDS until the receiver stops."""
Script = Callable[[int], Answer]
"""The answer to a request, given how many requests of its `webhook-id` came before it."""

WAIT_SECONDS = 60.0
"""How long anything may take to arrive before it counts as never arriving."""
TRICKLE_SECONDS = 0.1


@dataclass(frozen=True)
class Received:
    """One request, as the endpoint read it."""

    headers: dict[str, str]
    """Names in lower case."""
    body: bytes
    answer: Answer

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> Any:
        """The body, parsed, once the Standard Webhooks library has checked its signature."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """An endpoint on a port of its own, up while its `with` block runs unless made `down`;
    `down()` and `up()` keep the port, so that connections to it are refused in between."""

    def __init__(self, script: Script = lambda _: 200, *, down: bool = False) -> None:
        self.script = script
        self.location = "http://127.0.0.1:1/elsewhere"
        """Where a 3xx answer sends the sender."""
        self.port = free_port()
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()
        self._starts_down = down

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def ids(self) -> list[str]:
        """The `webhook-id` of every request, in the order they came."""
        return [each.webhook_id for each in self.received]

    async def until_received(self, count: int) -> list[Received]:
        """Every request, once at least `count` have come."""
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while len(received := self.received) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{len(received)} requests came in {WAIT_SECONDS:g} s, not {count}"
                )
            await asyncio.sleep(0.01)
        return received

    def up(self) -> None:
        self._stopping = threading.Event()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True).start()
        self._server = server

    def down(self) -> None:
        """Stop listening; a request held or trickling is answered first."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        if not self._starts_down:
            self.up()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.down()

    def _answer(self, headers: dict[str, str], body: bytes) -> Answer:
        with self._lock:
            seen = sum(
                each.headers.get("webhook-id") == headers.get("webhook-id")
                for each in self._received
            )
            answer = self.script(seen)
            self._received.append(Received(headers, body, answer))
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self
        stopping = self._stopping

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver._answer(headers, body)
                try:
                    if answer == "hold":
                        stopping.wait(WAIT_SECONDS)
                        self._status(200)
                    elif answer == "trickle":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                        while not stopping.wait(TRICKLE_SECONDS):
                            self.wfile.write(b"x-trickle: 1\r\n")
                            self.wfile.flush()
                        self.wfile.write(b"content-length: 0\r\n\r\n")
                    else:
                        self._status(answer)
                except OSError:
                    # The sender has gone: it timed out, or its process was killed.
                    pass

            def _status(self, status: int) -> None:
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
