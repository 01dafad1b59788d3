"""The HTTP/1.1 connection handler uvicorn runs: it bounds the size of a request's head, the time
the head takes to arrive and how long a client may take nothing of an answer, and answers what
it refuses in the service's one error shape."""

import asyncio
import json
import socket
import struct
import sys
from contextlib import suppress
from typing import ClassVar

import httptools
from uvicorn._types import ASGI3Application, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from tokenpulse.errors import BadRequest, error_body

# uvicorn's httptools parser accepts a request line and headers of any size, and buffers a
# header until it ends, so one client could make a worker hold any amount of memory. This
# handler answers 431 and closes the connection instead.

MAX_REQUEST_HEAD_BYTES = 16 * 1024
# Bytes are counted per read, and a read may also hold the end of the previous request.
_READ_MARGIN = 256 * 1024

# uvicorn gives a request's head all the time it wants, and stops its keep-alive timer at the
# first byte of the next one, so connections that never finish a head would pile up until the
# worker runs out of file descriptors and turns every new client away.

HEAD_TIMEOUT_SECONDS = 10.0

# uvicorn waits for a client to read what it was sent for as long as the client likes: one that
# stops reading a long answer (an export) would hold its connection, and whatever the answer
# holds (a database transaction), for good.

SEND_TIMEOUT_SECONDS = 30.0


class BoundedHeadHttpProtocol(HttpToolsProtocol):
    head_timeout: ClassVar[float] = HEAD_TIMEOUT_SECONDS
    """Seconds a request's line and headers may take, counted from the connection's opening for
    its first request and from the first byte after an answer for the next; each worker sets it
    from its settings."""

    _head_bytes = 0
    """Size of the current head, from what the parser has handed over (exact)."""
    _head_read = 0
    """Bytes read while a head was open (an upper bound, which also counts what the parser
    still buffers inside one long header)."""
    _in_head = False
    _in_message = False
    _received = False
    """Whether the client has sent anything at all: only then is a timeout answered."""
    _head_clock: asyncio.TimerHandle | None = None
    send_timeout: ClassVar[float] = SEND_TIMEOUT_SECONDS
    """Seconds a client may take nothing of an answer it is being sent before the connection is
    reset; each worker sets it from its settings."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_clock is None and self._between_requests():
            # The next request has begun, if only with blank lines, which the parser skips
            # without a word: uvicorn has stopped its keep-alive timer, so the head's starts.
            self._start_head_clock()
        self._received = True
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_read += len(data)
            if self._head_read > MAX_REQUEST_HEAD_BYTES + _READ_MARGIN:
                self._head_bytes = self._head_read
                self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        self._head_bytes = self._head_read = 0
        self._in_head = self._in_message = True
        if self._head_clock is None:
            self._start_head_clock()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_clock()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        send = cycle.send

        async def send_saying_whether_to_reuse(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start" and cycle.more_body:
                # Answered before its body has all arrived: the connection closes after this
                # answer, and the answer says so, or a client would send its next request down
                # a connection that is being closed and see it reset.
                cycle.keep_alive = False
            await self._drain_while_read(cycle)
            await send(message)

        cycle.send = send_saying_whether_to_reuse  # type: ignore[method-assign]
        super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_message and not self.transport.is_closing():
            # Answered before its body had all arrived (refused without reading it): what is
            # left of it would be read by nobody, and could trickle in for ever.
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            # Raised inside a parser callback, this stops parsing; uvicorn then answers through
            # send_400_response, which tells this case apart.
            raise ValueError("request head too large")

    def send_400_response(self, msg: str) -> None:
        if self._head_bytes > MAX_REQUEST_HEAD_BYTES:
            self._refuse(
                431,
                "request_header_fields_too_large",
                f"the request line and headers exceed {MAX_REQUEST_HEAD_BYTES:,} bytes",
            )
        else:
            self._refuse(400, BadRequest.code, _what_is_not_http())

    async def _drain_while_read(self, cycle: RequestResponseCycle) -> None:
        """Wait until the client has taken enough of what it was sent for more to be sent; reset
        the connection once it takes nothing for `send_timeout` (one that reads slowly still
        reads, and is kept)."""
        waiting = self.transport.get_write_buffer_size()
        while self.flow.write_paused and not cycle.disconnected:
            try:
                await asyncio.wait_for(self.flow.drain(), self.send_timeout)
            except TimeoutError:
                left = self.transport.get_write_buffer_size()
                if left >= waiting:
                    self._reset()
                    return
                waiting = left

    def _reset(self) -> None:
        """Close the connection at once, with a reset: what the kernel still holds for the
        client is dropped rather than kept for it. The app hears that its client has gone, as
        if it had left, and the sends that follow are dropped."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _between_requests(self) -> bool:
        """No request is being read or answered: the connection waits for the next one."""
        return not self._in_message and (self.cycle is None or self.cycle.response_complete)

    def _start_head_clock(self) -> None:
        self._head_clock = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_clock is not None:
            self._head_clock.cancel()
            self._head_clock = None

    def _head_timed_out(self) -> None:
        self._head_clock = None
        if self.transport.is_closing():
            return
        if not self._received:
            self.transport.close()  # a client that said nothing is owed no answer
        elif self.cycle is not None and not self.cycle.response_complete:
            # The answer to an earlier request is being written, and no other may cut into it:
            # the connection closes once it is complete.
            self.cycle.keep_alive = False
        else:
            self._refuse(
                408,
                "request_timeout",
                f"the request line and headers did not arrive within {self.head_timeout:g} s",
            )

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer what never became a request the application could see, and close."""
        earlier = self.cycle
        if earlier is not None and earlier.response_started and not earlier.response_complete:
            # Part of an earlier answer is out: bytes after it would read as its body, while a
            # cut is something the client can tell.
            self.transport.close()
            return
        body = json.dumps(error_body(code, message)).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def _what_is_not_http() -> str:
    """What the parser found wrong: uvicorn calls send_400_response while it handles the
    parser's error, whose reason names a rule of HTTP and never quotes the client's bytes."""
    error = sys.exception()
    reason = str(error) if isinstance(error, httptools.HttpParserError) else ""
    if not reason or isinstance(error, httptools.HttpParserCallbackError):
        # A failure in uvicorn's handling of what was parsed, not a rule of HTTP.
        return "the request is not valid HTTP/1.1"
    return f"the request is not valid HTTP/1.1: {reason[:1].lower()}{reason[1:]}"
