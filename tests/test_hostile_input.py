"""Hostile and broken input, through HTTP: every one gets a 4xx that names the problem, none a
5xx, and none stores anything; a bad event in a batch never blocks the good ones beside it.

The plainer mistakes are in test_event_rules.py and test_ingest_bodies.py; these tables hold
what an attacker, a fuzzer or a broken gateway sends.
"""

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, Keys
from tests.factories import event
from tests.servers import Server, running_server

JSON = "application/json"
NDJSON = "application/x-ndjson"
EVERYTHING = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-28T00:00:00Z"}


def good(event_id: str) -> bytes:
    return json.dumps(event(event_id=event_id, input_tokens=1000, output_tokens=10)).encode()


def with_member(name: str, value: str) -> bytes:
    """A valid event, as JSON text, with one member set to `value`, raw JSON text."""
    members = json.loads(good("bad"))
    members.pop(name, None)
    text = json.dumps(members)
    return (text[:-1] + f', "{name}": {value}}}').encode()


async def stored(client: httpx.AsyncClient) -> tuple[int, int]:
    """How many events are stored, and their input tokens."""
    response = await client.get("/v1/totals", params=EVERYTHING)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return (results[0]["requests"], results[0]["input_tokens"]) if results else (0, 0)


def refusal(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape, with no trace of the server's insides."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# One bad event between two good ones, as a JSON batch and as NDJSON: the bad one is rejected
# naming its field and why, and the good ones are stored, exactly.

LONG = 1_000_000

BAD_EVENTS = {
    "string-of-a-million-characters": (
        with_member("model", json.dumps("m" * LONG)),
        "model",
        f"must be at most 128 characters, got {LONG}",
    ),
    "event-id-of-a-million-characters": (
        with_member("event_id", json.dumps("e" * LONG)),
        "event_id",
        f"must be at most 128 characters, got {LONG}",
    ),
    "attribute-of-a-million-characters": (
        with_member("attributes", json.dumps({"route": "r" * LONG})),
        "attributes.route",
        f"must be at most 256 characters, got {LONG}",
    ),
    "count-of-2**63": (
        with_member("input_tokens", str(2**63)),
        "input_tokens",
        "must be at most 1,000,000,000, got 9223372036854775808",
    ),
    "count-of-5000-digits": (
        with_member("output_tokens", "7" * 5000),
        "output_tokens",
        "must be at most 1,000,000,000, got an integer of 5000 digits",
    ),
    "count-as-float": (
        with_member("input_tokens", "1000.0"),
        "input_tokens",
        "must be an integer, got a number with a decimal point or exponent",
    ),
    "count-as-string": (
        with_member("input_tokens", '"1000"'),
        "input_tokens",
        "must be an integer, got a string",
    ),
    "escaped-nul": (
        with_member("model", '"m\\u0000"'),
        "model",
        "must not contain NUL characters",
    ),
    "escaped-nul-in-an-attribute-key": (
        with_member("attributes", '{"k\\u0000": "v"}'),
        "attributes.k\x00",
        "key must not contain NUL characters",
    ),
    "lone-high-surrogate": (
        with_member("tenant", '"acme\\ud800"'),
        "tenant",
        "must be valid Unicode (it holds a lone surrogate)",
    ),
    "lone-low-surrogate": (
        with_member("project", '"\\udc00p"'),
        "project",
        "must be valid Unicode (it holds a lone surrogate)",
    ),
    "surrogates-in-the-wrong-order": (
        with_member("api_key_id", '"\\ude00\\ud83d"'),
        "api_key_id",
        "must be valid Unicode (it holds a lone surrogate)",
    ),
    "lone-surrogate-in-an-unknown-field-name": (
        with_member("\\ud800", "1"),
        "\\ud800",
        "is not a known field",
    ),
    "naive-timestamp": (
        with_member("occurred_at", '"2026-11-27T11:59:00"'),
        "occurred_at",
        "must include a UTC offset ('Z' or ±hh:mm)",
    ),
    "timestamp-before-the-window": (
        with_member("occurred_at", '"2026-10-23T11:59:59Z"'),
        "occurred_at",
        "is older than the accepted 35 days",
    ),
    "timestamp-after-the-window": (
        with_member("occurred_at", '"2026-11-27T12:05:01Z"'),
        "occurred_at",
        "is more than 5 minutes in the future",
    ),
    "timestamp-at-the-end-of-time": (
        with_member("occurred_at", '"9999-12-31T23:59:59-23:59"'),
        "occurred_at",
        "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z",
    ),
    "timestamp-in-year-zero": (
        with_member("occurred_at", '"0000-01-01T00:00:00Z"'),
        "occurred_at",
        "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z",
    ),
    "timestamp-on-a-leap-second": (
        with_member("occurred_at", '"2026-11-27T11:59:60Z"'),
        "occurred_at",
        "must be an RFC 3339 timestamp such as 2026-11-27T09:00:00Z",
    ),
    "duplicate-key": (
        with_member("model", '"m-large", "model": "m-small"'),
        "model",
        "appears more than once",
    ),
}


@pytest.mark.parametrize(
    ("body_format", "separator"), [(JSON, b", "), (NDJSON, b"\n")], ids=["json-batch", "ndjson"]
)
@pytest.mark.parametrize(("bad", "field", "message"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_a_bad_event_is_rejected_naming_its_field_and_the_good_ones_beside_it_are_stored(
    client: httpx.AsyncClient,
    body_format: str,
    separator: bytes,
    bad: bytes,
    field: str,
    message: str,
) -> None:
    events = separator.join([good("good-0"), bad, good("good-2")])
    body = b'{"events": [' + events + b"]}" if body_format == JSON else events

    response = await client.post("/v1/events", content=body, headers={"content-type": body_format})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (2, 0, 1)
    [rejection] = answer["errors"]
    assert rejection["index"] == 1
    assert {"field": field, "message": message} in rejection["errors"]
    assert await stored(client) == (2, 2000)


# Bodies refused as a whole: nothing in them is stored, even the good events.

BAD_BODIES = {
    "nan-beside-a-good-event": (
        b'{"events": [' + good("g") + b', {"input_tokens": NaN}]}',
        JSON,
        400,
        "the body is not valid JSON: NaN is not a JSON value",
    ),
    "raw-nul-byte": (
        b'{"events": [' + good("g") + b', {"model": "m\x00"}]}',
        JSON,
        400,
        "the body is not valid JSON: Invalid control character at",
    ),
    "surrogate-encoded-as-utf-8-bytes": (
        b'{"events": [' + good("g") + b', {"model": "\xed\xa0\x80"}]}',
        JSON,
        400,
        "the body is not valid JSON: invalid UTF-8 at byte",
    ),
    "overlong-utf-8": (
        good("g")[:-1] + b', "project": "\xc0\xaf"}',
        JSON,
        400,
        "the body is not valid JSON: invalid UTF-8 at byte",
    ),
    "unterminated-string-of-a-million-characters": (
        b'{"events": [' + good("g") + b', {"model": "' + b"m" * LONG,
        JSON,
        400,
        "the body is not valid JSON: Unterminated string starting at",
    ),
    "deep-nesting-inside-an-event": (
        good("g")[:-1] + b', "attributes": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        JSON,
        400,
        "the body is not valid JSON: nested too deeply",
    ),
    "pretty-printed-json-sent-as-ndjson": (
        json.dumps({"events": [event()]}, indent=2).encode(),
        NDJSON,
        400,
        "the body is not valid NDJSON: no line is valid JSON",
    ),
    "ndjson-sent-as-json": (
        good("g") + b"\n" + good("h"),
        JSON,
        400,
        "the body is not valid JSON: Extra data",
    ),
    "events-as-a-string": (b'{"events": "[]"}', JSON, 400, '"events" must be an array'),
    "a-body-as-form-data": (b"events=1", "application/x-www-form-urlencoded", 415, "Content-Type"),
    "a-json-body-labelled-as-text": (good("g"), "text/plain", 415, "Content-Type"),
}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"), BAD_BODIES.values(), ids=BAD_BODIES.keys()
)
async def test_a_body_that_cannot_be_read_is_refused_saying_why_and_nothing_is_stored(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int, message: str
) -> None:
    response = await client.post("/v1/events", content=body, headers={"content-type": content_type})

    assert refusal(response, status)["message"].startswith(message)
    assert await stored(client) == (0, 0)


# Query parameters: a 422 naming the parameter, never a 5xx.

BAD_QUERIES = {
    "totals-at-the-end-of-time": (
        "/v1/totals?start=8999-12-31T23:59:00Z&end=9999-12-31T23:59:30Z",
        "end",
        "must lie from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    ),
    "usage-day-before-year-one-in-a-time-zone": (
        "/v1/usage?start=0001-01-01T00:00:00Z&tz=America/New_York",
        "start",
        "must lie from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    ),
    "usage-hour-at-the-end-of-time": (
        "/v1/usage?bucket=1h&start=9999-12-31T22:00:00Z&end=9999-12-31T23:00:00Z",
        "start",
        "must lie from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    ),
    "milestones-since-the-end-of-time": (
        "/v1/milestones?threshold=1&since=9999-12-31T23:59:59Z",
        "since",
        "must lie from 1970-01-01T00:00:00Z to before 9000-01-01T00:00:00Z",
    ),
    "nul-in-a-filter": ("/v1/usage?start=2026-11-26T00:00:00Z&model=m%00", "model", "NUL"),
    "long-filter": (f"/v1/milestones?threshold=1&tenant={'t' * 5000}", "tenant", "1 to 128"),
    "nul-in-a-timestamp": ("/v1/totals?start=2026-11-27T10:00:00Z%00", "start", "RFC 3339"),
    "nul-in-a-time-zone": ("/v1/usage?start=2026-11-26T00:00:00Z&tz=UTC%00", "tz", "IANA"),
    "path-as-a-time-zone": ("/v1/usage?start=2026-11-26T00:00:00Z&tz=../../etc/passwd", "tz", ""),
    "nul-in-group-by": ("/v1/totals?window=1h&group_by=model%00", "group_by", "is not one of"),
    "threshold-of-2**63": (f"/v1/milestones?threshold={2**63}&model=m", "threshold", ""),
    "threshold-of-5000-digits": (f"/v1/milestones?threshold={'9' * 5000}", "threshold", ""),
    "threshold-as-float": ("/v1/milestones?threshold=1e3", "threshold", ""),
    "nul-in-a-path": ("/v1/launches/m%00", "model", "NUL"),
}


@pytest.mark.parametrize(("url", "field", "message"), BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
async def test_a_bad_query_parameter_is_refused_naming_it(
    client: httpx.AsyncClient, url: str, field: str, message: str
) -> None:
    error = refusal(await client.get(url), 422)
    [problem] = error["errors"]
    assert problem["field"] == field
    assert message in problem["message"]


# The small bodies of keys and launches are read as ingest reads events: a repeated key, NUL or
# a lone surrogate is refused naming the field.

BAD_SMALL_BODIES = {
    "repeated-key": (
        "/v1/keys",
        b'{"name": "a", "scope": "read", "name": "b"}',
        "name",
        "appears more than once",
    ),
    "escaped-nul": (
        "/v1/keys",
        b'{"name": "a\\u0000", "scope": "read"}',
        "name",
        "must not contain NUL characters",
    ),
    "lone-surrogate": (
        "/v1/keys",
        b'{"name": "ok", "scope": "read", "tenant": "\\ud800"}',
        "tenant",
        "must be valid Unicode (it holds a lone surrogate)",
    ),
    "nan": (
        "/v1/keys",
        b'{"name": "a", "scope": "read", "tenant": NaN}',
        None,
        "the body is not valid JSON: NaN is not a JSON value",
    ),
    "invalid-utf-8": (
        "/v1/launches/m",
        b'{"launched_at": "\xff"}',
        None,
        "the body is not valid JSON: invalid UTF-8 at byte 17",
    ),
    "repeated-launch-instant": (
        "/v1/launches/m",
        b'{"launched_at": "2026-11-27T00:00:00Z", "launched_at": "2026-11-28T00:00:00Z"}',
        "launched_at",
        "appears more than once",
    ),
    "launch-instant-with-a-nul": (
        "/v1/launches/m",
        b'{"launched_at": "2026-11-27T00:00:00Z\\u0000"}',
        "launched_at",
        "must be an RFC 3339 timestamp",
    ),
}


@pytest.mark.parametrize(
    ("url", "body", "field", "message"), BAD_SMALL_BODIES.values(), ids=BAD_SMALL_BODIES.keys()
)
async def test_a_bad_key_or_launch_body_is_refused_naming_the_field(
    client: httpx.AsyncClient, url: str, body: bytes, field: str | None, message: str
) -> None:
    method = "PUT" if url.startswith("/v1/launches") else "POST"
    response = await client.request(method, url, content=body, headers={"content-type": JSON})

    error = refusal(response, 422)
    [problem] = error["errors"]
    assert problem["field"] == field
    assert problem["message"].startswith(message)
    named = problem["message"] if field is None else f"{field}: {problem['message']}"
    assert error["message"] == named
    assert len((await client.get("/v1/keys")).json()["keys"]) == 1  # the test's own admin key
    assert (await client.get("/v1/launches")).json() == {"launches": []}


# A Content-Length that lies, on a real connection.


@pytest.fixture
def server(db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path) -> Iterator[Server]:
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, env=env) as server:
        yield server


def send_raw(server: Server, request: bytes, *, half_close: bool = False) -> bytes:
    """Send `request` as it is, and everything the server answers until it closes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if not half_close and b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
        return answer


def ingest_request(keys: Keys, body: bytes, content_length: int | str) -> bytes:
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: tokenpulse\r\n"
        f"Authorization: Bearer {keys.admin}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {content_length}\r\n\r\n"
    )
    return head.encode() + body


def stored_on(server: Server, keys: Keys) -> int:
    response = httpx.get(
        f"{server.url}/v1/totals",
        params=EVERYTHING,
        headers={"Authorization": f"Bearer {keys.admin}"},
    )
    results = response.json()["results"]
    return int(results[0]["requests"]) if results else 0


@pytest.mark.process
def test_a_content_length_shorter_than_the_body_is_a_bad_request_and_stores_nothing(
    server: Server, keys: Keys
) -> None:
    body = b'{"events": [' + good("a") + b", " + good("b") + b"]}"

    answer = send_raw(server, ingest_request(keys, body, len(body) // 2), half_close=True)

    # The cut JSON is refused, or the rest of the body, read as the next request, is refused
    # first: either way the answer is a 400.
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert stored_on(server, keys) == 0


@pytest.mark.process
def test_a_content_length_longer_than_the_body_stores_nothing_when_the_client_gives_up(
    server: Server, keys: Keys
) -> None:
    body = b'{"events": [' + good("a") + b"]}"

    answer = send_raw(server, ingest_request(keys, body, len(body) + 100), half_close=True)

    assert not answer.startswith(b"HTTP/1.1 5")
    assert stored_on(server, keys) == 0
    logged = [json.loads(line) for line in server.log().splitlines()]
    assert [line for line in logged if line["level"] in ("error", "critical")] == []


@pytest.mark.parametrize("content_length", ["abc", "-1", "1, 2"])
@pytest.mark.process
def test_a_content_length_that_is_not_a_length_is_a_bad_request(
    server: Server, keys: Keys, content_length: str
) -> None:
    answer = send_raw(server, ingest_request(keys, good("a"), content_length), half_close=True)

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert stored_on(server, keys) == 0
