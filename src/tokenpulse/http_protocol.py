"""The HTTP/1.1 connection handler uvicorn runs, with a bound on the size of a request's head."""

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# uvicorn's httptools parser accepts a request line and headers of any size, and buffers a
# header until it ends, so one client could make a worker hold any amount of memory. This
# handler answers 431 and closes the connection instead.

MAX_REQUEST_HEAD_BYTES = 16 * 1024
# Bytes are counted per read, and a read may also hold the end of the previous request.
_READ_MARGIN = 256 * 1024


class BoundedHeadHttpProtocol(HttpToolsProtocol):
    _head_bytes = 0
    """Size of the current head, from what the parser has handed over (exact)."""
    _head_read = 0
    """Bytes read while a head was open (an upper bound, which also counts what the parser
    still buffers inside one long header)."""
    _in_head = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_read += len(data)
            if self._head_read > MAX_REQUEST_HEAD_BYTES + _READ_MARGIN:
                self._head_bytes = self._head_read
                self.send_400_response("request head too large")

    def on_message_begin(self) -> None:
        self._head_bytes = self._head_read = 0
        self._in_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

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
        if self._head_bytes <= MAX_REQUEST_HEAD_BYTES:
            super().send_400_response(msg)
            return
        body = json.dumps(
            {
                "error": {
                    "code": "request_header_fields_too_large",
                    "message": f"the request line and headers exceed {MAX_REQUEST_HEAD_BYTES:,} "
                    "bytes",
                }
            }
        ).encode()
        head = (
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()
