"""OTLP ingest beside `/v1/events`: the same usage, 1,000 events a request, in the same run.

    .venv/bin/python bench/gateways.py            # 200 requests of each, 3 runs (a few minutes)
    .venv/bin/python bench/gateways.py --tiny     # seconds: that the benchmark still works
    .venv/bin/python bench/gateways.py --breakdown  # where one export's decoding spends its time

Each run sends one set of live-traffic events twice to one server (2 workers, 8 connections),
into one database: as `POST /v1/events` JSON batches, and as OTLP/HTTP protobuf exports of
1,000 GenAI usage spans each (`POST /v1/traces`, ids made fresh so that both store every
event). The figures are medians of the runs; the ratio is OTLP's rate over the JSON rate.
"""

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules
from loadgen import closed_loop, median, request_bytes
from run import (
    BATCH,
    HOST,
    Row,
    Rows,
    admin_key,
    fresh_database,
    live,
    number,
    on_a_database,
    table,
    tokenpulse,
)

COUNTS = {
    "input_tokens": "gen_ai.usage.input_tokens",
    "output_tokens": "gen_ai.usage.output_tokens",
    "cached_input_tokens": "gen_ai.usage.cache_read.input_tokens",
    "cache_write_input_tokens": "gen_ai.usage.cache_write.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
}
"""Each measure of an event and the attribute of a span that carries it."""


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _count(key: str, value: int) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(int_value=value))


def usage_span(event: dict[str, Any]) -> Span:
    """The span an OpenTelemetry GenAI instrumentation would export for `event`'s call."""
    end = datetime.fromisoformat(event["occurred_at"])
    end_nanos = int(end.timestamp()) * 1_000_000_000 + end.microsecond * 1000
    attributes = [
        _text("gen_ai.operation.name", "chat"),
        _text("gen_ai.request.model", event["model"]),
        _text("tenant.id", event["tenant"]),
        _text("project.id", event["project"]),
        *(_count(attribute, event.get(measure) or 0) for measure, attribute in COUNTS.items()),
    ]
    if event.get("api_key_id"):
        attributes.append(_text("api_key.id", event["api_key_id"]))
    return Span(
        trace_id=secrets.token_bytes(16),
        span_id=secrets.token_bytes(8),
        name=f"chat {event['model']}",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=end_nanos - 800_000_000,
        end_time_unix_nano=end_nanos,
        attributes=attributes,
    )


def export_body(events: list[dict[str, Any]]) -> bytes:
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_text("service.name", "gateway")]),
                scope_spans=[ScopeSpans(spans=[usage_span(event) for event in events])],
            )
        ]
    )
    body: bytes = request.SerializeToString()
    return body


def events_requests(key: str, batches: Iterable[list[dict[str, Any]]]) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return [
        request_bytes("POST", "/v1/events", headers, json.dumps({"events": events}).encode())
        for events in batches
    ]


def traces_requests(key: str, batches: Iterable[list[dict[str, Any]]]) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
    return [request_bytes("POST", "/v1/traces", headers, export_body(events)) for events in batches]


async def compare(server_url: str, requests_per_run: int, reps: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"events": [], "traces": []}
    async with fresh_database(server_url) as url:
        key = await admin_key(url)
        with tokenpulse(url, workers=2) as (port, _):
            for rep in range(reps):
                batches = list(live(requests_per_run * BATCH, seed=300 + rep).batches(BATCH))
                built = {
                    "events": events_requests(key, batches),
                    "traces": traces_requests(key, batches),
                }
                # Alternate which goes first, so that neither always meets the warmer database.
                for name in ("events", "traces") if rep % 2 == 0 else ("traces", "events"):
                    seconds, _, statuses = await closed_loop(HOST, port, built[name], connections=8)
                    assert set(statuses) == {200}, (name, statuses)
                    rates[name].append(requests_per_run * BATCH / seconds)
    return rates


def breakdown(reps: int = 20) -> None:
    """Each step of decoding one export of 1,000 spans in this process, beside validating the same
    events as a JSON batch: medians of `reps` runs, in ms."""
    from tokenpulse.ingest.body import Format
    from tokenpulse.ingest.events import Checking, EventRules
    from tokenpulse.ingest.validation import validate_body
    from tokenpulse.otlp.attributes import Reading
    from tokenpulse.otlp.calls import counted_spans
    from tokenpulse.otlp.export import export_events
    from tokenpulse.otlp.spans import checked_event
    from tokenpulse.otlp.wire import Encoding, _count_protobuf
    from tokenpulse.settings import Settings

    settings = Settings()
    [events] = live(BATCH, seed=1).batches(BATCH)
    body, batch = export_body(events), json.dumps({"events": events}).encode()
    reading = Reading.of(settings)
    checking = Checking(EventRules.of(settings), datetime.now(UTC), None)
    request = ExportTraceServiceRequest.FromString(body)
    spans = counted_spans(request, reading)

    def each_event() -> None:
        for usage in spans:
            checked_event(usage, reading, checking)

    steps: dict[str, Callable[[], object]] = {
        "/v1/events: the same events validated as one JSON batch": lambda: validate_body(
            batch, Format.JSON, checking, max_events=10_000
        ),
        "the bounds walk over the protobuf bytes": lambda: _count_protobuf(body),
        "protobuf decoding (upb)": lambda: ExportTraceServiceRequest.FromString(body),
        "reading the wanted attributes, finding the counted spans": lambda: counted_spans(
            request, reading
        ),
        "each span's event, read and validated": each_event,
        "all (export_events)": lambda: export_events(
            body, Encoding.PROTOBUF, checking, reading=reading, max_events=10_000
        ),
    }
    for name, step in steps.items():
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        print(f"{name}: {1000 * statistics.median(times):.1f} ms")


async def run(args: argparse.Namespace, server_url: str) -> int:
    requests_per_run, reps = (5, 1) if args.tiny else (args.requests, args.reps)
    print(
        f"machine: {os.cpu_count()} cores shared by the service, PostgreSQL and the load "
        f"generator; 2 tokenpulse workers; medians of {reps} runs",
        file=sys.stderr,
    )
    rates = await compare(server_url, requests_per_run, reps)
    events, traces = median(rates["events"]), median(rates["traces"])
    rows = Rows()
    rows.append(
        Row(
            "OTLP/HTTP protobuf, 1,000 usage spans an export (events/s)",
            number(traces),
            f"/v1/events JSON, the same events {number(events)}",
            f"{traces / events:.2f}",
        )
    )
    print(table(rows))
    return 0


def main(args: argparse.Namespace) -> int:
    if args.breakdown:
        breakdown()
        return 0
    return on_a_database(lambda server_url: run(args, server_url))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a run of seconds, to keep it working")
    parser.add_argument(
        "--breakdown", action="store_true", help="time each step of decoding one export"
    )
    parser.add_argument("--reps", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--requests", type=int, default=200, help="requests per run (default 200)")
    raise SystemExit(main(parser.parse_args()))
