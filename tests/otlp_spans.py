"""GenAI spans made by OpenTelemetry's own SDK, as its exporter sends them or as OTLP JSON, and a
tokenpulse app served by uvicorn on a port for the exporter to send to."""

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.conftest import bearer
from tests.gateways import until
from tests.servers import free_port

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Attributes = Mapping[str, AttributeValue]


def nanos(instant: datetime, extra: int = 0) -> int:
    """`instant` in nanoseconds since 1970, exactly, with `extra` nanoseconds more."""
    return (instant - _EPOCH) // timedelta(microseconds=1) * 1000 + extra


def chat(model: str, input_tokens: int, output_tokens: int, **more: AttributeValue) -> Attributes:
    """A GenAI inference span's attributes, as the semantic conventions spell them."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        **more,
    }


class Calls:
    """Spans made by the SDK's tracer, under one resource, kept as they end."""

    def __init__(self, resource: Attributes | None = None) -> None:
        self._finished = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create(dict(resource or {})))
        provider.add_span_processor(SimpleSpanProcessor(self._finished))
        self._tracer = provider.get_tracer("tokenpulse-tests")

    def span(
        self,
        name: str,
        attributes: Attributes,
        *,
        ended: datetime,
        extra_nanos: int = 0,
        parent: trace.Span | None = None,
    ) -> trace.Span:
        """A span of a second that ended at `ended` (and `extra_nanos`), under `parent`."""
        span = self.start(name, attributes, at=ended - timedelta(seconds=1), parent=parent)
        self.end(span, ended, extra_nanos)
        return span

    def start(
        self, name: str, attributes: Attributes, *, at: datetime, parent: trace.Span | None = None
    ) -> trace.Span:
        """A span still open, for spans below it to end first, as they do."""
        context = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(
            name, context=context, attributes=attributes, start_time=nanos(at)
        )

    def end(self, span: trace.Span, at: datetime, extra_nanos: int = 0) -> None:
        span.end(end_time=nanos(at, extra_nanos))

    def finished(self) -> tuple[ReadableSpan, ...]:
        """Every span ended since the last call, in the order they ended."""
        spans = self._finished.get_finished_spans()
        self._finished.clear()
        return spans


def exporter(
    url: str, key: str, *, headers: Mapping[str, str] | None = None, **options: Any
) -> OTLPSpanExporter:
    """The SDK's OTLP/HTTP exporter, sending protobuf to `url`'s `/v1/traces` with `key` (and
    `headers`)."""
    return OTLPSpanExporter(
        endpoint=f"{url}/v1/traces",
        headers={**bearer(key), **(headers or {})},
        timeout=30,
        **options,
    )


GZIP = Compression.Gzip


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The export the exporter would send, in OTLP JSON: protobuf's JSON mapping, with ids in
    hex as OTLP JSON writes them instead of its base64."""
    document: dict[str, Any] = json_format.MessageToDict(encode_spans(spans))
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return document


def event_id(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}:{context.span_id:016x}"


class Answered:
    """An app that notes the status of every answer it sends, and first does what a test asks
    on one of a status: the test's hand on the server, which the client cannot see."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self.statuses: list[tuple[str, int]] = []
        self.before: dict[int, Callable[[], Awaitable[None]]] = {}

    def of(self, path: str) -> list[int]:
        return [status for answered, status in self.statuses if answered == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append((scope["path"], message["status"]))
                if (first := self.before.pop(message["status"], None)) is not None:
                    await first()
            await send(message)

        await self._app(scope, receive, sending)


@asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free port of this host, in this event loop; its URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), "uvicorn to start serving")
        assert not task.done(), "uvicorn stopped as it started"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
