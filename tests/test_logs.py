"""The log: one JSON object per line on stderr, one access line per request with its id, and
never a key's secret or a request's body."""

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, Keys, bearer
from tests.factories import event
from tests.servers import running_server
from tokenpulse.access import incoming_or_new_request_id
from tokenpulse.app import create_app
from tokenpulse.database import create_engine
from tokenpulse.logs import JsonFormatter, TextFormatter
from tokenpulse.settings import Settings

NEW_ID = re.compile(r"[0-9a-f]{32}")
MARKER = "body-marker-5ee1b0d7"


def log_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log, each parsed as the JSON object it must be."""
    return [json.loads(line) for line in text.splitlines()]


def access_lines(lines: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line["logger"] == "tokenpulse.access" and line.get("request_id") == request_id
    ]


@pytest.mark.process
def test_each_request_is_one_json_line_with_its_id_and_caller_and_nothing_of_its_secrets(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, "--workers", "2", env=env) as server:
        with httpx.Client(base_url=server.url) as client:
            ingest = client.post(
                "/v1/keys",
                json={"name": "gw", "scope": "ingest", "tenant": "acme"},
                headers=bearer(keys.admin),
            ).json()["key"]
            body = json.dumps(
                {
                    "events": [
                        event(
                            at=datetime.now(UTC) - timedelta(minutes=1),
                            attributes={"note": MARKER},
                        ),
                        event(model=MARKER, input_tokens="12"),
                    ]
                }
            ).encode()
            sent = client.post(
                "/v1/events",
                content=body,
                headers={
                    **bearer(ingest),
                    "content-type": "application/json",
                    "x-request-id": "gw-7.trace_42",
                },
            )
            insane = client.get("/healthz", headers={"x-request-id": 'a b"{}<script>'})
            too_long = client.get("/healthz", headers={"x-request-id": "x" * 129})
            unnamed = client.get("/v1/totals", params={"window": "1h"})
            forged = client.get(
                "/v1/totals", params={"window": "1h"}, headers=bearer(ingest[:-4] + "AAAA")
            )
        server.stop()
        lines = log_lines(server.log())

    assert sent.status_code == 200, sent.text
    assert sent.headers["x-request-id"] == "gw-7.trace_42"
    [line] = access_lines(lines, "gw-7.trace_42")
    assert line["level"] == "info"
    assert line["message"] == "POST /v1/events 200"
    assert {name: line[name] for name in line if name not in ("time", "duration_seconds")} == {
        "level": "info",
        "logger": "tokenpulse.access",
        "message": "POST /v1/events 200",
        "request_id": "gw-7.trace_42",
        "method": "POST",
        "route": "/v1/events",
        "path": "/v1/events",
        "status": 200,
        "bytes_in": len(body),
        "bytes_out": len(sent.content),
        "key_id": ingest.split("_")[1],
        "tenant": "acme",
    }
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
    assert line["duration_seconds"] >= 0

    for replaced in (insane, too_long):
        new_id = replaced.headers["x-request-id"]
        assert NEW_ID.fullmatch(new_id)
        [line] = access_lines(lines, new_id)
        assert (line["route"], line["status"]) == ("/healthz", 200)
    for refused in (unnamed, forged):
        [line] = access_lines(lines, refused.headers["x-request-id"])
        assert (line["route"], line["status"]) == ("/v1/totals", 401)
        assert "key_id" not in line, "only an authenticated caller is named"

    log = server.log()
    assert "<script>" not in log
    assert MARKER not in log, "no body reaches the log"
    for token in (keys.admin, ingest):
        assert token.split("_", 2)[2] not in log
    assert any(line["logger"] == "uvicorn.error" for line in lines), "uvicorn's lines too"


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"0f8e6c0a-3b7e-4e0f-9a55-0d3c2b1a7e11", True),
        (b"gw-7.trace_42", True),
        (b"x" * 128, True),
        (b"x" * 129, False),
        (b"", False),
        (b"two words", False),
        (b'quote"d', False),
        (b"line\nbreak", False),
        ("caf\u00e9".encode(), False),
    ],
)
def test_an_incoming_request_id_is_kept_only_when_short_and_of_token_characters(
    header: bytes, kept: bool
) -> None:
    chosen = incoming_or_new_request_id([(b"accept", b"*/*"), (b"x-request-id", header)])

    if kept:
        assert chosen == header.decode()
    else:
        assert NEW_ID.fullmatch(chosen)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """What the service logs while a test runs, as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


async def test_an_unexpected_failure_answers_500_with_its_request_id_in_the_header_and_the_log(
    settings: Settings, captured: io.StringIO
) -> None:
    app = create_app(settings)

    @app.get("/v1/failing")
    async def failing() -> None:
        raise RuntimeError("a bug")

    async with app.router.lifespan_context(app):
        # The failure is answered, and then raised on for the server to log: not into this test.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.get("/v1/failing", headers={"x-request-id": "req-500"})

    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "req-500"
    lines = [line for line in log_lines(captured.getvalue()) if line.get("request_id") == "req-500"]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("tokenpulse.error_handlers", "error"),
        ("tokenpulse.access", "warning"),
    ]
    assert "RuntimeError: a bug" in lines[0]["exception"]
    assert lines[1]["status"] == 500


def test_the_text_format_is_one_readable_line_with_the_same_fields() -> None:
    record = logging.LogRecord(
        "tokenpulse.access", logging.INFO, __file__, 1, "GET /x %d", (200,), None
    )
    record.fields = {"route": "/x", "status": 200}
    record.created = datetime(2026, 11, 27, 12, 0, 1, 250000, tzinfo=UTC).timestamp()

    assert TextFormatter().format(record) == (
        "2026-11-27T12:00:01.250000Z INFO tokenpulse.access GET /x 200 route=/x status=200"
    )
    assert json.loads(JsonFormatter().format(record)) == {
        "time": "2026-11-27T12:00:01.250000Z",
        "level": "info",
        "logger": "tokenpulse.access",
        "message": "GET /x 200",
        "route": "/x",
        "status": 200,
    }


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_no_decoded_character_of_a_path_can_start_a_log_line_of_its_own(
    formatter: logging.Formatter,
) -> None:
    path = "/v1/x\n2026-11-27T12:00:00Z INFO forged\u2028line\r"
    record = logging.LogRecord(
        "tokenpulse.access", logging.INFO, __file__, 1, "GET %s 404", (path,), None
    )
    record.fields = {"path": path}

    assert len(formatter.format(record).splitlines()) == 1


async def test_a_failed_statement_quotes_none_of_its_parameters(database_url: str) -> None:
    engine = create_engine(Settings(), database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as failure:
                await connection.exec_driver_sql("SELECT $1::text, 1 / 0", (MARKER,))
    finally:
        await engine.dispose()

    assert MARKER not in str(failure.value)
