"""Every HTTP request's id, its one access log line and its metrics: a pure ASGI layer around
the whole application (cheaper per request than a `BaseHTTPMiddleware`)."""

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenpulse.logs import FIELDS, request_id
from tokenpulse.metrics import Metrics

log = logging.getLogger("tokenpulse.access")

REQUEST_ID_HEADER = b"x-request-id"
# An incoming id is kept only when it is short and made of HTTP token characters, so that it
# cannot forge log lines or carry a payload; any other is replaced by a new one.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")
_CALLER = "tokenpulse.caller"


@dataclass
class _Caller:
    key_id: str
    tenant: str | None


def note_caller(scope: Scope, key_id: str, tenant: str | None) -> None:
    """Name the authenticated caller of the request `scope` is of, for its access line.

    Only the key's public id: never its secret.
    """
    scope[_CALLER] = _Caller(key_id, tenant)


def incoming_or_new_request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER and _SANE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class AccessLayer:
    """Gives each HTTP request an id (echoed in `X-Request-ID`), counts it in the metrics by
    route template, and logs one line for it once it is answered.

    The line tells what a request was, never what it carried: no body, no header but the id.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        this_request = incoming_or_new_request_id(scope["headers"])
        id_header = (REQUEST_ID_HEADER, this_request.encode("ascii"))
        token = request_id.set(this_request)
        status = 500
        bytes_in = bytes_out = 0

        async def receive_counted() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_noted(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_counted, send_noted)
        finally:
            seconds = time.perf_counter() - started
            # The route's template, never the raw path: one series per endpoint, not per URL.
            route: str | None = getattr(scope.get("route"), "path_format", None)
            self._count(scope["method"], route, status, seconds)
            self._log(scope, route, status, seconds, bytes_in, bytes_out)
            request_id.reset(token)

    def _count(self, method: str, route: str | None, status: int, seconds: float) -> None:
        template = route or "unmatched"
        self.metrics.requests.labels(template, method, str(status)).inc()
        self.metrics.request_seconds.labels(template, method).observe(seconds)

    def _log(
        self,
        scope: Scope,
        route: str | None,
        status: int,
        seconds: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        level = logging.WARNING if status >= 500 else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route,
            "path": scope["path"],
            "status": status,
            "duration_seconds": round(seconds, 6),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
        }
        if (caller := scope.get(_CALLER)) is not None:
            fields["key_id"] = caller.key_id
            fields["tenant"] = caller.tenant
        log.log(level, "%s %s %d", scope["method"], scope["path"], status, extra={FIELDS: fields})
