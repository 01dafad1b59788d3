"""`POST /v1/traces`: what OpenTelemetry's own exporter sends, and OTLP JSON, become one usage
event per model call, stored once; every answer is one an OTLP client acts on as it should."""

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.error_details_pb2 import BadRequest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, UNLIMITED_ENV, ClientFactory, Clock, Keys, Ticker, bearer
from tests.factories import measures
from tests.otlp_spans import (
    GZIP,
    Answered,
    Attributes,
    Calls,
    chat,
    event_id,
    exporter,
    otlp_json,
    serving,
)
from tests.servers import Server, running_server
from tokenpulse.app import create_app
from tokenpulse.instants import floor_to, parse_rfc3339
from tokenpulse.settings import Settings
from tokenpulse.tables import metadata

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MINUTE = timedelta(minutes=1)


def protobuf_of(spans: tuple[ReadableSpan, ...]) -> bytes:
    """The body the exporter sends for `spans`."""
    return encode_spans(spans).SerializeToString()


def counts(**measured: int) -> dict[str, int]:
    """An event's counts, as `measures` adds them up."""
    return measured


async def totals(client: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    answer = await client.get("/v1/totals", params={"window": "24h", **params})
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


async def stored(db: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Every stored event by its id, with who and what it counts."""
    async with db.connect() as connection:
        rows = await connection.exec_driver_sql(
            "SELECT event_id, tenant, project, api_key_id, model, occurred_at, input_tokens, "
            "cached_input_tokens, cache_write_input_tokens, output_tokens, reasoning_tokens, "
            "attributes FROM usage_event"
        )
        return {row.event_id: dict(row._mapping) for row in rows}


def partial_success(answer: httpx.Response) -> tuple[int, str]:
    """(rejected spans, error message) of a protobuf export answer."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"
    body = ExportTraceServiceResponse.FromString(answer.content)
    return body.partial_success.rejected_spans, body.partial_success.error_message


def status_of(answer: httpx.Response) -> Status:
    """The `google.rpc.Status` of an error answer, in the encoding it says it has."""
    if answer.headers["content-type"] == "application/x-protobuf":
        return Status.FromString(answer.content)
    assert answer.headers["content-type"] == "application/json"
    return json_format.Parse(answer.text, Status())


# --- The SDK's exporter against a tokenpulse server process -------------------------------


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "TOKENPULSE_DATABASE_URL": database_url,
        **UNLIMITED_ENV,
        # Everything the service would ever log, for the test that looks for prompts in it.
        "TOKENPULSE_LOG_LEVEL": "debug",
        "TOKENPULSE_OTLP_TENANT_ATTRIBUTES": "tenant.id,metadata.user_api_key_team_id",
    }
    with running_server(tmp_path_factory.mktemp("otlp"), env=env) as server:
        yield server


@asynccontextmanager
async def admin_of(server: Server, keys: Keys) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url, headers=bearer(keys.admin), timeout=30
    ) as client:
        yield client


@pytest.mark.process
async def test_the_exporters_spans_are_counted_once_in_totals_and_milestones(
    server: Server, keys: Keys
) -> None:
    ingest = await keys.create("ingest", tenant="acme")
    launched = floor_to(datetime.now(UTC), MINUTE) - 10 * MINUTE
    calls = Calls({"service.name": "support-bot"})
    for number in range(1, 7):
        usage = chat(
            "pulse-7",
            100 * number,
            10 * number,
            **{
                "gen_ai.usage.cache_read.input_tokens": number,
                "gen_ai.usage.cache_creation.input_tokens": 2 * number,
                "gen_ai.usage.reasoning.output_tokens": number,
            },
        )
        calls.span("chat pulse-7", usage, ended=launched + number * MINUTE, extra_nanos=123456789)
    spans = calls.finished()
    sender = exporter(server.url, ingest)

    sent = await asyncio.to_thread(sender.export, spans)
    again = await asyncio.to_thread(sender.export, spans)
    async with admin_of(server, keys) as admin:
        launch = {"launched_at": launched.isoformat()}
        assert (await admin.put("/v1/launches/pulse-7", json=launch)).status_code == 201
        counted = await totals(admin, group_by="tenant,model")
        milestone = await admin.get(
            "/v1/milestones", params={"model": "pulse-7", "threshold": 1000}
        )

    assert (sent, again) == (SpanExportResult.SUCCESS, SpanExportResult.SUCCESS)
    assert counted == [
        {
            "tenant": "acme",
            "model": "pulse-7",
            **measures(
                *(
                    counts(
                        input_tokens=100 * n,
                        output_tokens=10 * n,
                        cached_input_tokens=n,
                        cache_write_input_tokens=2 * n,
                        reasoning_tokens=n,
                    )
                    for n in range(1, 7)
                )
            ),
        }
    ]
    # 110, 330, 660, 1100: the fourth call crosses 1,000 tokens, at its end to the microsecond.
    crossing = milestone.json()
    assert crossing["reached"] is True
    assert crossing["event_id"] == event_id(spans[3])
    assert parse_rfc3339(crossing["crossed_at"]) == launched + 4 * MINUTE + timedelta(
        microseconds=123456
    )


@pytest.mark.process
async def test_a_gzipped_export_is_taken_and_its_tenant_read_from_its_resource(
    server: Server, keys: Keys
) -> None:
    ingest = await keys.create("ingest")
    ended = datetime.now(UTC) - MINUTE
    calls = Calls({"tenant.id": "globex"})
    calls.span("chat", chat("pulse-7", 500, 50), ended=ended)
    calls.span("chat", chat("pulse-7-mini", 70, 7), ended=ended)

    sent = await asyncio.to_thread(
        exporter(server.url, ingest, compression=GZIP).export, calls.finished()
    )
    async with admin_of(server, keys) as admin:
        counted = await totals(admin, group_by="tenant,model")

    assert sent == SpanExportResult.SUCCESS
    assert [(r["tenant"], r["model"], r["input_tokens"], r["output_tokens"]) for r in counted] == [
        ("globex", "pulse-7", 500, 50),
        ("globex", "pulse-7-mini", 70, 7),
    ]


MARKER = "pulse-marker-6c1f0e"
"""Text of a prompt and a completion, which must never be stored or logged."""


@pytest.mark.process
async def test_no_prompt_or_completion_reaches_the_database_or_the_log(
    server: Server, keys: Keys, db: AsyncEngine
) -> None:
    ingest = await keys.create("ingest")
    ended = datetime.now(UTC) - MINUTE
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": MARKER}]}])
    content = {
        "gen_ai.input.messages": messages,
        "gen_ai.output.messages": messages,
        "gen_ai.system_instructions": MARKER,
        "gen_ai.prompt.0.content": MARKER,
        "gen_ai.completion.0.content": MARKER,
        "llm.input_messages.0.message.content": MARKER,
        "input.value": MARKER,
    }
    calls = Calls({"tenant.id": "initech"})
    calls.span("chat", {**chat("pulse-7", 12, 3), **content}, ended=ended)
    calls.span(
        "chat", {**chat("pulse-7", 12, 3), **content, "gen_ai.request.model": ""}, ended=ended
    )
    calls.span("tool", content, ended=ended)

    sent = await asyncio.to_thread(exporter(server.url, ingest).export, calls.finished())
    async with admin_of(server, keys) as admin:
        counted = await totals(admin)
    texts = []
    async with db.connect() as connection:
        for table in metadata.tables:
            rows = await connection.exec_driver_sql(f"SELECT t::text FROM {table} AS t")
            texts += [row[0] for row in rows]

    assert sent == SpanExportResult.SUCCESS
    assert counted[0]["requests"] == 1, "the call was stored, the span without a model not"
    assert not [text for text in texts if MARKER in text]
    assert "/v1/traces" in server.log()
    assert MARKER not in server.log()
    assert MARKER not in server.output()


def resident_kib(server: Server) -> int:
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def _delimited(field: int, payload: bytes) -> bytes:
    """A protobuf length-delimited field (field numbers and lengths as varints)."""
    length, encoded = len(payload), b""
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            return bytes([field << 3 | 2]) + encoded + payload


_EMPTY_SPANS = _delimited(1, _delimited(2, _delimited(2, b"") * 4_000_000))
_EMPTY_EVENTS = _delimited(1, _delimited(2, _delimited(2, _delimited(11, b"") * 4_000_000)))
# Empty attributes of one resource; one span attribute whose value is an array of empty values.
_RESOURCE_ATTRIBUTES = _delimited(1, _delimited(1, _delimited(1, b"") * 4_000_000))
_ARRAY_VALUES = _delimited(
    1,
    _delimited(
        2,
        _delimited(2, _delimited(9, _delimited(2, _delimited(5, _delimited(1, b"") * 4_000_000)))),
    ),
)
_EMPTY_JSON_SPANS = (
    b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + b"{}," * 3_000_000 + b"{}]}]}]}"
)


@pytest.mark.process
@pytest.mark.parametrize(
    ("body", "content_type", "refusal"),
    [
        (_EMPTY_SPANS, "application/x-protobuf", "more than 100,000 spans"),
        (_EMPTY_EVENTS, "application/x-protobuf", "more than 1,000,000 attributes, events"),
        (_RESOURCE_ATTRIBUTES, "application/x-protobuf", "more than 1,000,000 attributes"),
        (_ARRAY_VALUES, "application/x-protobuf", "more than 1,000,000 attributes"),
        (_EMPTY_JSON_SPANS, "application/json", "more than 1,000,000 JSON values"),
    ],
    ids=["protobuf spans", "protobuf events", "resource attributes", "array values", "json spans"],
)
def test_an_export_of_millions_of_empty_messages_is_refused_unparsed_while_memory_stays_flat(
    server: Server, keys: Keys, body: bytes, content_type: str, refusal: str
) -> None:
    # Parsed, each would hold some 200 MB (JSON) to 700 MB (spans) for its few MiB.
    before = resident_kib(server)

    answer = httpx.post(
        f"{server.url}/v1/traces",
        content=body,
        headers={"Content-Type": content_type, **bearer(keys.admin)},
        timeout=30,
    )

    assert answer.status_code == 413
    assert refusal in status_of(answer).message
    assert resident_kib(server) - before < 64 * 1024


def test_a_json_export_of_unclosed_escaped_strings_is_answered_at_once(
    server: Server, keys: Keys
) -> None:
    # Strings were once found by a pattern that, left without a closing quote, scanned on from
    # each of the body's quotes: 40 KB of this took 4.7 s on the event loop, 1 MiB hours.
    body = b'{"resourceSpans": "' + b'\\"' * (512 * 1024)

    answer = httpx.post(
        f"{server.url}/v1/traces",
        content=body,
        headers={"Content-Type": "application/json", **bearer(keys.admin)},
        timeout=30,
    )

    assert answer.status_code == 400
    assert status_of(answer).message.startswith("the body is not valid JSON")


# --- The exporter's retries, against an app served in this process -----------------------


@asynccontextmanager
async def served(
    settings: Settings, clock: Clock, monotonic: Ticker, **changes: Any
) -> AsyncIterator[tuple[str, Answered]]:
    app = Answered(
        create_app(
            Settings(**{**settings.model_dump(), **changes}), clock=clock, monotonic=monotonic
        )
    )
    async with serving(app) as url:
        yield url, app


async def test_the_exporter_retries_a_429_and_a_503_and_each_span_is_stored_once(
    settings: Settings,
    clock: Clock,
    monotonic: Ticker,
    keys: Keys,
    db: AsyncEngine,
    make_client: ClientFactory,
) -> None:
    ingest = await keys.create("ingest", tenant="acme")
    calls = Calls()
    spans = []
    for number in range(3):
        calls.span("chat", chat("pulse-7", 10 + number, 1), ended=NOW - (number + 1) * MINUTE)
        spans.append(calls.finished())
    # One request a second per key, and a flush that cannot commit waits a second at most.
    async with (
        served(
            settings,
            clock,
            monotonic,
            rate_limit_ingest=1,
            rate_limit_burst_seconds=1,
            ingest_timeout=1,
        ) as (url, app),
        db.connect() as blocker,
    ):
        sender = exporter(url, ingest)
        first = await asyncio.to_thread(sender.export, spans[0])

        async def refill() -> None:
            monotonic.advance(1)

        app.before[429] = refill
        limited = await asyncio.to_thread(sender.export, spans[1])

        async def unblock() -> None:
            await blocker.rollback()
            monotonic.advance(1)

        # Writers wait on the pending deltas until this transaction ends: a stalled database.
        await blocker.exec_driver_sql("LOCK TABLE rollup_pending IN SHARE MODE")
        monotonic.advance(1)
        app.before[503] = unblock
        unavailable = await asyncio.to_thread(sender.export, spans[2])
    async with make_client() as client:
        counted = await totals(client)

    assert (first, limited, unavailable) == (SpanExportResult.SUCCESS,) * 3
    assert app.of("/v1/traces") == [200, 429, 200, 503, 200]
    assert counted == [measures(*(counts(input_tokens=10 + n, output_tokens=1) for n in range(3)))]
    assert set(await stored(db)) == {event_id(span) for batch in spans for span in batch}


@pytest.mark.parametrize(
    ("changes", "headers", "scope", "refused"),
    [
        ({}, {"Content-Encoding": "gzip"}, "ingest", 400),
        ({}, {}, None, 401),
        ({}, {}, "read", 403),
        ({"max_body_bytes": 1024}, {}, "ingest", 413),
    ],
    ids=["undecodable", "no key", "read key", "too large"],
)
async def test_the_exporter_gives_up_at_once_on_an_error_it_must_not_retry(
    settings: Settings,
    clock: Clock,
    monotonic: Ticker,
    keys: Keys,
    changes: dict[str, Any],
    headers: dict[str, str],
    scope: str | None,
    refused: int,
) -> None:
    key = await keys.create(scope) if scope is not None else "tp_unknown"
    calls = Calls()
    for _ in range(10):
        calls.span("chat", chat("pulse-7", 10, 1, padding="p" * 200), ended=NOW - MINUTE)
    async with served(settings, clock, monotonic, **changes) as (url, app):
        # For "undecodable", a Content-Encoding the exporter is told to send over a body it
        # does not compress.
        sender = exporter(url, key, headers=headers)
        sent = await asyncio.to_thread(sender.export, calls.finished())

    assert sent == SpanExportResult.FAILURE
    assert app.of("/v1/traces") == [refused]


# --- Bodies and answers, in this process --------------------------------------------------


async def test_otlp_json_with_hex_ids_is_the_same_export_as_its_protobuf(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    calls = Calls({"tenant.id": "acme"})
    parent = calls.start("agent", {}, at=NOW - 2 * MINUTE)
    calls.span("chat", chat("pulse-7", 40, 4), ended=NOW - MINUTE, parent=parent)
    calls.span("chat", chat("pulse-7", 50, 5), ended=NOW - MINUTE, extra_nanos=999, parent=parent)
    calls.end(parent, NOW - MINUTE)
    spans = calls.finished()

    as_json = await client.post("/v1/traces", json=otlp_json(spans))
    counted = await totals(client)
    as_protobuf = await client.post("/v1/traces", content=protobuf_of(spans), headers=PROTOBUF)

    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == {}
    assert partial_success(as_protobuf) == (0, "")
    assert counted == [
        measures(counts(input_tokens=40, output_tokens=4), counts(input_tokens=50, output_tokens=5))
    ]
    assert await totals(client) == counted, "the same spans again: duplicates, by the same ids"
    assert set(await stored(db)) == {event_id(span) for span in spans[:2]}


def kv(key: str, **value: object) -> dict[str, object]:
    """An OTLP JSON attribute."""
    return {"key": key, "value": value}


async def test_hand_written_otlp_json_with_string_integers_and_uppercase_hex_is_read(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    ended = NOW - MINUTE
    nanos = (ended - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("tenant.id", stringValue="acme")]},
                "scopeSpans": [
                    {
                        "scope": {"name": "handwritten"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "name": "chat pulse-7",
                                "kind": 3,
                                "startTimeUnixNano": str(nanos - 10**9),
                                "endTimeUnixNano": str(nanos + 654321),
                                "attributes": [
                                    kv("gen_ai.response.model", stringValue="pulse-7-0501"),
                                    kv("gen_ai.request.model", stringValue="pulse-7"),
                                    kv("gen_ai.usage.input_tokens", intValue="1200"),
                                    kv("gen_ai.usage.output_tokens", intValue=300),
                                    kv("gen_ai.usage.cache_read.input_tokens", doubleValue=200.0),
                                    kv("gen_ai.usage.reasoning.output_tokens", stringValue="100"),
                                ],
                                "status": {"code": 1},
                                "unknownField": {"ignored": True},
                            }
                        ],
                    }
                ],
            }
        ]
    }

    answer = await client.post("/v1/traces", content=json.dumps(body), headers=JSON)

    assert answer.status_code == 200, answer.text
    assert answer.json() == {}
    event = (await stored(db))["5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"]
    assert event["model"] == "pulse-7-0501", "the model that answered"
    assert event["occurred_at"] == ended + timedelta(microseconds=654)
    assert (event["input_tokens"], event["cached_input_tokens"]) == (1200, 200)
    assert (event["output_tokens"], event["reasoning_tokens"]) == (300, 100)
    assert event["attributes"] is None, "nothing of the span is kept but its usage"


async def test_good_bad_and_other_spans_answer_a_partial_success_naming_each_attribute(
    client: httpx.AsyncClient,
) -> None:
    calls = Calls({"tenant.id": "acme"})
    ended = NOW - MINUTE
    calls.span("chat", chat("pulse-7", 100, 10), ended=ended)
    calls.span("chat", chat("pulse-7", 200, 20), ended=ended)
    bad: list[tuple[Attributes, str]] = [
        (
            {"gen_ai.usage.input_tokens": "12.5"},
            'gen_ai.usage.input_tokens: must be an integer, got the string "12.5"',
        ),
        (
            {"gen_ai.request.model": ""},
            "model: is required: the span has no gen_ai.response.model or gen_ai.request.model",
        ),
        (
            {"gen_ai.usage.cache_read.input_tokens": 101},
            "gen_ai.usage.cache_read.input_tokens: must not exceed input_tokens (100), got 101",
        ),
        (
            {"gen_ai.usage.output_tokens": -1},
            "gen_ai.usage.output_tokens: must be at least 0, got -1",
        ),
    ]
    for wrong, _ in bad:
        calls.span("chat", {**chat("pulse-7", 100, 10), **wrong}, ended=ended)
    calls.span("chat", chat("pulse-7", 100, 10), ended=NOW - timedelta(days=36))
    reasons = [reason for _, reason in bad]
    reasons.append("end_time_unix_nano: is older than the accepted 35 days")
    calls.span("GET /search", {"http.request.method": "GET"}, ended=ended)
    calls.span("total only", {"gen_ai.usage.total_tokens": 30}, ended=ended)
    spans = calls.finished()

    answer = await client.post("/v1/traces", content=protobuf_of(spans), headers=PROTOBUF)
    as_json = await client.post("/v1/traces", json=otlp_json(spans))

    rejected, message = partial_success(answer)
    assert rejected == 5
    assert message == "5 of 7 usage spans rejected" + "".join(
        f" | span {event_id(span)}: {reason}"
        for span, reason in zip(spans[2:7], reasons, strict=True)
    )
    assert as_json.json() == {"partialSuccess": {"rejectedSpans": "5", "errorMessage": message}}
    assert await totals(client) == [
        measures(
            counts(input_tokens=100, output_tokens=10), counts(input_tokens=200, output_tokens=20)
        )
    ]


async def test_the_error_message_lists_the_first_rejected_spans_that_fit_and_counts_the_rest(
    client: httpx.AsyncClient,
) -> None:
    calls = Calls({"tenant.id": "acme"})
    for _ in range(200):
        calls.span(
            "chat", chat("pulse-7", 10, 1, **{"gen_ai.request.model": ""}), ended=NOW - MINUTE
        )
    spans = calls.finished()

    rejected, message = partial_success(
        await client.post("/v1/traces", content=protobuf_of(spans), headers=PROTOBUF)
    )

    listed = message.count(" | span ")
    assert rejected == 200
    assert 1 <= listed < 200
    assert message.endswith(f" | and {200 - listed} more")
    assert len(message) <= 1000


@pytest.mark.parametrize(
    ("value", "read"),
    [
        (12, 12),
        (12.0, 12),
        ("12", 12),
        # LiteLLM writes "" for a count it has not got: nothing said, and input counts 0.
        ("", 0),
        (12.5, "must be an integer, got the double 12.5"),
        (True, "must be an integer, got a boolean"),
        ("twelve", 'must be an integer, got the string "twelve"'),
        ([1, 2], "must be an integer, got an array"),
    ],
)
async def test_a_count_is_read_from_an_integer_a_whole_double_or_decimal_digits_only(
    client: httpx.AsyncClient, db: AsyncEngine, value: Any, read: int | str
) -> None:
    calls = Calls({"tenant.id": "acme"})
    calls.span(
        "chat", chat("pulse-7", 0, 5, **{"gen_ai.usage.input_tokens": value}), ended=NOW - MINUTE
    )
    (span,) = calls.finished()

    rejected, message = partial_success(
        await client.post("/v1/traces", content=protobuf_of((span,)), headers=PROTOBUF)
    )

    if isinstance(read, int):
        assert (rejected, message) == (0, "")
        assert (await stored(db))[event_id(span)]["input_tokens"] == read
    else:
        assert rejected == 1
        assert message.endswith(f"gen_ai.usage.input_tokens: {read}")


async def test_the_other_spellings_of_each_count_are_read_and_the_first_present_wins(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    calls = Calls({"tenant.id": "acme"})
    openinference: Attributes = {
        "llm.model_name": "ignored",
        "gen_ai.request.model": "pulse-7",
        "llm.token_count.prompt": 900,
        "llm.token_count.completion": 90,
        "llm.token_count.prompt_details.cache_read": 300,
        "llm.token_count.prompt_details.cache_write": 200,
        "llm.token_count.completion_details.reasoning": 9,
    }
    older: Attributes = {
        "gen_ai.request.model": "pulse-7",
        "gen_ai.usage.prompt_tokens": 800,
        "gen_ai.usage.completion_tokens": 80,
        "gen_ai.usage.cache_read_input_tokens": 100,
        "gen_ai.usage.cache_creation_input_tokens": 50,
    }
    both: Attributes = {**older, "gen_ai.usage.input_tokens": 700, "gen_ai.usage.output_tokens": 70}
    embeddings: Attributes = {"gen_ai.request.model": "embed-3", "gen_ai.usage.input_tokens": 64}
    for attributes in (openinference, older, both, embeddings):
        calls.span("call", attributes, ended=NOW - MINUTE)
    spans = calls.finished()

    answer = await client.post("/v1/traces", content=protobuf_of(spans), headers=PROTOBUF)

    assert partial_success(answer) == (0, "")
    events = await stored(db)
    read = [
        tuple(
            events[event_id(span)][name]
            for name in (
                "input_tokens",
                "cached_input_tokens",
                "cache_write_input_tokens",
                "output_tokens",
                "reasoning_tokens",
            )
        )
        for span in spans
    ]
    assert read == [
        (900, 300, 200, 90, 9),
        (800, 100, 50, 80, 0),
        (700, 100, 50, 70, 0),
        (64, 0, 0, 0, 0),
    ]


async def test_tenant_project_and_api_key_id_are_read_from_the_span_then_its_resource(
    make_client: ClientFactory, keys: Keys, db: AsyncEngine
) -> None:
    resource: Attributes = {"tenant.id": "from-resource", "project.id": 42}
    calls = Calls(resource)
    ended = NOW - MINUTE
    litellm = {"metadata.user_api_key_team_id": "team-a", "metadata.user_api_key_hash": "9f86d0"}
    calls.span("chat", {**chat("pulse-7", 1, 1), **litellm}, ended=ended)
    calls.span("chat", {**chat("pulse-7", 1, 1), "metadata.user_api_key_team_id": ""}, ended=ended)
    own = {"project.id": "search", "api_key.id": "k-1"}
    calls.span("chat", {**chat("pulse-7", 1, 1), **own}, ended=ended)
    sent = calls.finished()
    anywhere = Calls()
    anywhere.span("chat", chat("pulse-7", 1, 1), ended=ended)
    nameless = anywhere.finished()
    bound = await keys.create("ingest", tenant="acme")
    configured = {
        "otlp_tenant_attributes": ["tenant.id", "metadata.user_api_key_team_id"],
        "otlp_api_key_id_attributes": ["api_key.id", "metadata.user_api_key_hash"],
    }

    async with make_client(**configured) as client:
        platform = await client.post("/v1/traces", content=protobuf_of(sent), headers=PROTOBUF)
        unnamed = await client.post("/v1/traces", content=protobuf_of(nameless), headers=PROTOBUF)
        # A bound key's tenant, whatever the spans say.
        other = Calls({"tenant.id": "globex"})
        other.span("chat", chat("pulse-7", 1, 1), ended=ended)
        named_otherwise = other.finished()
        by_bound_key = await client.post(
            "/v1/traces",
            content=protobuf_of(nameless + named_otherwise),
            headers={**PROTOBUF, **bearer(bound)},
        )

    events = await stored(db)
    assert partial_success(platform) == (0, "")
    assert [
        (
            events[event_id(span)]["tenant"],
            events[event_id(span)]["project"],
            events[event_id(span)]["api_key_id"],
        )
        for span in sent
    ] == [
        # The span's own team before the resource's tenant.id, and the resource's project.
        ("team-a", "42", "9f86d0"),
        # "" says nothing: the resource's tenant.id.
        ("from-resource", "42", None),
        ("from-resource", "search", "k-1"),
    ]
    assert partial_success(unnamed) == (
        1,
        f"1 of 1 usage spans rejected | span {event_id(nameless[0])}: tenant: is required: the "
        "key is bound to no tenant, and neither the span nor its resource has tenant.id or "
        "metadata.user_api_key_team_id",
    )
    assert partial_success(by_bound_key) == (0, "")
    assert [events[event_id(span)]["tenant"] for span in nameless + named_otherwise] == [
        "acme",
        "acme",
    ]


# --- Which spans count: the calls, not what adds them up ---------------------------------


async def test_only_the_calls_are_counted_where_instrumentations_put_usage_on_more_spans(
    make_client: ClientFactory, db: AsyncEngine
) -> None:
    ended = NOW - MINUTE
    calls = Calls({"service.name": "gateway"})

    # LiteLLM's proxy: its request span, the litellm_request span with the usage (and team), and
    # the raw_gen_ai_request span below it with the provider's own payload, as strings.
    proxy = calls.start("litellm_proxy_request", {"http.route": "/chat/completions"}, at=ended)
    litellm_request = calls.span(
        "litellm_request",
        {
            **chat("pulse-7", 100, 10),
            "gen_ai.usage.total_tokens": 110,
            "gen_ai.response.model": "pulse-7-0501",
            "metadata.user_api_key_team_id": "team-a",
            "llm.is_streaming": "False",
        },
        ended=ended,
        parent=proxy,
    )
    calls.span(
        "raw_gen_ai_request",
        {
            "llm.openai.usage": "{'prompt_tokens': 100, 'completion_tokens': 10}",
            "llm.openai.model": "pulse-7",
        },
        ended=ended,
        parent=litellm_request,
    )
    calls.end(proxy, ended)
    # LiteLLM in an application's own span, which it fills with the usage, while another
    # instrumentation records the same call to the provider below it.
    handler = calls.start("answer_question", {}, at=ended)
    calls.span(
        "openai.chat",
        {
            "gen_ai.request.model": "pulse-7",
            "gen_ai.usage.prompt_tokens": 200,
            "gen_ai.usage.completion_tokens": 20,
        },
        ended=ended,
        parent=handler,
    )
    handler.set_attributes({**chat("pulse-7", 200, 20), "metadata.user_api_key_team_id": "team-b"})
    calls.end(handler, ended)
    # Pydantic AI: the agent run adds up its two model requests.
    agent = calls.start("agent run", {"agent_name": "support", "model_name": "pulse-7"}, at=ended)
    for tokens in (300, 400):
        calls.span("chat pulse-7", chat("pulse-7", tokens, 30), ended=ended, parent=agent)
    agent.set_attributes({"gen_ai.usage.input_tokens": 700, "gen_ai.usage.output_tokens": 60})
    calls.end(agent, ended)
    # OpenInference: a chain with the counts of the LLM span below it.
    chain = calls.start("chain", {"openinference.span.kind": "CHAIN"}, at=ended)
    calls.span(
        "llm",
        {
            "openinference.span.kind": "LLM",
            "gen_ai.request.model": "pulse-7",
            "llm.token_count.prompt": 500,
            "llm.token_count.completion": 50,
        },
        ended=ended,
        parent=chain,
    )
    chain.set_attributes({"llm.token_count.prompt": 500, "llm.token_count.completion": 50})
    calls.end(chain, ended)
    spans = calls.finished()

    async with make_client(
        otlp_tenant_attributes=["metadata.user_api_key_team_id", "service.name"]
    ) as client:
        answer = await client.post("/v1/traces", content=protobuf_of(spans), headers=PROTOBUF)

    names = {event_id(span): span.name for span in spans}
    events = await stored(db)
    assert partial_success(answer) == (0, "")
    assert sorted(
        (names[id_], event["input_tokens"], event["tenant"]) for id_, event in events.items()
    ) == [
        ("chat pulse-7", 300, "gateway"),
        ("chat pulse-7", 400, "gateway"),
        ("litellm_request", 100, "team-a"),
        ("llm", 500, "gateway"),
        ("openai.chat", 200, "gateway"),
    ]


async def test_an_agent_span_exported_after_its_calls_is_not_counted_again(
    make_client: ClientFactory, db: AsyncEngine
) -> None:
    ended = NOW - MINUTE
    calls = Calls({"tenant.id": "acme"})
    agent = calls.start("invoke_agent support", {"gen_ai.operation.name": "invoke_agent"}, at=ended)
    calls.span("chat pulse-7", chat("pulse-7", 300, 30), ended=ended, parent=agent)
    calls.span("chat pulse-7", chat("pulse-7", 400, 30), ended=ended, parent=agent)
    # A batch processor exports what has ended: the calls, and later on the agent's run.
    earlier = calls.finished()
    agent.set_attributes({**chat("pulse-7", 700, 60), "gen_ai.operation.name": "invoke_agent"})
    calls.end(agent, ended)
    later = calls.finished()

    async with make_client() as client:
        first = await client.post("/v1/traces", content=protobuf_of(earlier), headers=PROTOBUF)
        then = await client.post("/v1/traces", content=protobuf_of(later), headers=PROTOBUF)
    counted = set(await stored(db))
    async with make_client(otlp_rollup_spans=[]) as client:
        unmarked = await client.post("/v1/traces", content=protobuf_of(later), headers=PROTOBUF)

    assert partial_success(first) == partial_success(then) == (0, "")
    assert counted == {event_id(span) for span in earlier}
    assert partial_success(unmarked) == (0, "")
    assert set(await stored(db)) == counted | {event_id(later[0])}, "unmarked, it is a call"


@pytest.mark.parametrize(
    ("setting", "value", "refusal"),
    [
        ("otlp_tenant_attributes", "tenant.id,gen_ai.input.messages", "must not name a span's"),
        ("otlp_project_attributes", "gen_ai.prompt.0.content", "must not name a span's"),
        ("otlp_rollup_spans", "invoke_agent", "must be attribute=value pairs"),
    ],
)
def test_a_setting_that_would_store_a_prompt_or_marks_nothing_is_refused_at_start(
    setting: str, value: str, refusal: str
) -> None:
    with pytest.raises(ValidationError, match=refusal):
        Settings.model_validate(
            {"database_url": "postgresql://unused@127.0.0.1/unused", setting: value}
        )


# --- Errors, as OTLP/HTTP answers them ----------------------------------------------------


async def test_a_body_that_cannot_be_decoded_is_a_400_with_a_status_in_its_encoding(
    client: httpx.AsyncClient,
) -> None:
    garbage = await client.post("/v1/traces", content=b"\x0a\xff\xff\xff", headers=PROTOBUF)
    not_json = await client.post("/v1/traces", content=b"{", headers=JSON)
    base64_ids = await client.post(
        "/v1/traces",
        json={
            "resourceSpans": [
                {"scopeSpans": [{"spans": [{"traceId": "W47/95gDgQPSabYzgT/GDA=="}]}]}
            ]
        },
    )
    not_gzip = await client.post(
        "/v1/traces", content=b"plain", headers={**PROTOBUF, "Content-Encoding": "gzip"}
    )
    # An attribute whose key is no string names no attribute tokenpulse reads.
    odd_key = await client.post(
        "/v1/traces",
        json={"resourceSpans": [{"resource": {"attributes": [{"key": [], "value": {}}]}}]},
    )

    assert [a.status_code for a in (garbage, not_json, base64_ids, not_gzip)] == [400] * 4
    status = status_of(garbage)
    assert garbage.headers["content-type"] == "application/x-protobuf"
    assert status.code == 3
    assert status.message.startswith("the body is not a protobuf ExportTraceServiceRequest: ")
    detail = BadRequest()
    assert status.details[0].Unpack(detail)
    assert detail.field_violations[0].description == status.message
    assert not_json.headers["content-type"] == "application/json"
    assert status_of(not_json).message.startswith("the body is not valid JSON")
    assert status_of(base64_ids).message == (
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: must be an id in hex, as OTLP JSON "
        "writes them, got W47/95gDgQPSabYzgT/GDA=="
    )
    assert status_of(not_gzip).message.startswith("the body is not valid gzip")
    assert odd_key.status_code == 200, odd_key.text


async def test_a_refused_key_is_a_status_in_the_requests_encoding_with_what_http_asks(
    make_client: ClientFactory, keys: Keys
) -> None:
    read = await keys.create("read")
    async with make_client(token=None) as client:
        missing = await client.post("/v1/traces", content=b"", headers=PROTOBUF)
        missing_json = await client.post("/v1/traces", json={})
        wrong_scope = await client.post("/v1/traces", json={}, headers=bearer(read))

    assert (missing.status_code, missing.headers["content-type"]) == (401, "application/x-protobuf")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert (status_of(missing).code, status_of(missing).message) == (
        16,
        "send an API key: Authorization: Bearer tp_…",
    )
    assert (missing_json.status_code, missing_json.headers["content-type"]) == (
        401,
        "application/json",
    )
    assert status_of(missing_json).code == 16
    assert wrong_scope.status_code == 403
    assert status_of(wrong_scope).message == "this key has the read scope; this needs ingest"


async def test_limits_and_unknown_encodings_answer_413_and_415_as_statuses(
    make_client: ClientFactory,
) -> None:
    calls = Calls({"tenant.id": "acme"})
    for _ in range(3):
        calls.span("chat", chat("pulse-7", 1, 1), ended=NOW - MINUTE)
    body = protobuf_of(calls.finished())
    async with make_client(max_events_per_request=2) as client:
        too_many = await client.post("/v1/traces", content=body, headers=PROTOBUF)
        too_large = await client.post(
            "/v1/traces",
            content=gzip.compress(b"\0" * (11 * 1024 * 1024)),
            headers={**PROTOBUF, "Content-Encoding": "gzip"},
        )
        text = await client.post(
            "/v1/traces", content=b"spans", headers={"Content-Type": "text/plain"}
        )
        brotli = await client.post(
            "/v1/traces", content=body, headers={**PROTOBUF, "Content-Encoding": "br"}
        )

    assert too_many.status_code == 413
    assert status_of(too_many).message == (
        "the body holds more than 2 usage spans; at most 2 are accepted at once"
    )
    assert too_large.status_code == 413
    assert status_of(too_large).message == "the body is larger than the limit of 10,485,760 bytes"
    assert (text.status_code, text.headers["content-type"]) == (415, "application/json")
    assert status_of(text).message == (
        "Content-Type must be application/x-protobuf or application/json, got text/plain"
    )
    assert brotli.status_code == 415
    assert status_of(brotli).message == "Content-Encoding must be gzip or absent, got br"


async def test_metrics_and_logs_are_refused_with_an_error_no_exporter_retries(
    client: httpx.AsyncClient,
) -> None:
    metrics = await client.post("/v1/metrics", content=b"\x0a\x00", headers=PROTOBUF)
    logs = await client.post("/v1/logs", json={"resourceLogs": []})

    # 501: not among the statuses OTLP retries, and no success that would hide the data's loss.
    assert (metrics.status_code, logs.status_code) == (501, 501)
    assert status_of(metrics).message == (
        "tokenpulse keeps no metrics: it takes token usage from traces, at POST /v1/traces; "
        "send metrics elsewhere"
    )
    assert logs.headers["content-type"] == "application/json"
    assert "keeps no logs" in status_of(logs).message


async def test_an_empty_export_is_a_full_success(client: httpx.AsyncClient) -> None:
    empty = await client.post("/v1/traces", content=b"", headers=PROTOBUF)
    empty_json = await client.post("/v1/traces", json={})

    assert partial_success(empty) == (0, "")
    assert empty.content == b""
    assert empty_json.json() == {}
