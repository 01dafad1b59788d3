"""The bodies `POST /v1/events` takes, by content type and encoding, and the ones it refuses."""

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.factories import event

JSON = "application/json"
NDJSON = "application/x-ndjson"
EVERYTHING = {"start": "2026-10-01T00:00:00Z", "end": "2026-11-28T00:00:00Z"}


async def post(
    client: httpx.AsyncClient,
    content: bytes,
    content_type: str | None = JSON,
    **headers: str,
) -> httpx.Response:
    """Post `content` as it is, with these headers (underscores in their names as dashes)."""
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if content_type is not None:
        sent["content-type"] = content_type
    return await client.post("/v1/events", content=content, headers=sent)


def ndjson(*lines: object) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def batch(count: int) -> bytes:
    return json.dumps({"events": [event() for _ in range(count)]}).encode()


async def stored_requests(client: httpx.AsyncClient) -> int:
    response = await client.get("/v1/totals", params=EVERYTHING)
    results = response.json()["results"]
    return int(results[0]["requests"]) if results else 0


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error a refused body got, once it is known to be the one JSON shape of every error."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


def counts(response: httpx.Response) -> tuple[int, int, int]:
    result = response.json()
    return result["accepted"], result["duplicates"], result["rejected"]


# the accepted shapes


async def test_single_event_object_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, json.dumps(event()).encode())
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
    assert await stored_requests(client) == 1


async def test_batch_of_events_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, batch(3))
    assert response.status_code == 200, response.text
    assert counts(response) == (3, 0, 0)
    assert await stored_requests(client) == 3


async def test_json_with_a_charset_and_any_letter_case_is_accepted(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, batch(1), "Application/JSON; charset=utf-8")
    assert response.status_code == 200, response.text


async def test_pretty_printed_json_is_accepted(client: httpx.AsyncClient) -> None:
    body = json.dumps({"events": [event(), event()]}, indent=4).encode()
    response = await post(client, b"\n  " + body + b"\n\n")
    assert response.status_code == 200, response.text
    assert counts(response) == (2, 0, 0)


async def test_ndjson_takes_one_event_per_line(client: httpx.AsyncClient) -> None:
    response = await post(client, ndjson(event(), event(), event()), NDJSON)
    assert response.status_code == 200, response.text
    assert counts(response) == (3, 0, 0)
    assert await stored_requests(client) == 3


async def test_ndjson_last_line_needs_no_newline(client: httpx.AsyncClient) -> None:
    body = ndjson(event()) + json.dumps(event()).encode()
    response = await post(client, body, NDJSON)
    assert response.status_code == 200, response.text
    assert counts(response) == (2, 0, 0)


async def test_ndjson_blank_lines_and_crlf_line_ends_are_ignored(
    client: httpx.AsyncClient,
) -> None:
    lines = [json.dumps(event()).encode() for _ in range(3)]
    body = b"\n\n" + lines[0] + b"\r\n   \n\t\r\n" + lines[1] + b"\n\n" + lines[2] + b"\r\n\n"
    response = await post(client, body, NDJSON)
    assert response.status_code == 200, response.text
    assert counts(response) == (3, 0, 0)


async def test_ndjson_index_counts_only_non_blank_lines(client: httpx.AsyncClient) -> None:
    good = [json.dumps(event()).encode() for _ in range(3)]
    bad = json.dumps(event(event_id="bad", input_tokens="12")).encode()
    body = b"\n".join([good[0], b"", good[1], b"  ", b"", bad, good[2]]) + b"\n"
    response = await post(client, body, NDJSON)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": 1,
        "errors": [
            {
                "index": 2,
                "event_id": "bad",
                "errors": [
                    {"field": "input_tokens", "message": "must be an integer, got a string"}
                ],
            }
        ],
    }


async def test_ndjson_line_that_is_not_json_is_rejected_on_its_own(
    client: httpx.AsyncClient,
) -> None:
    body = b"\n".join(
        [
            json.dumps(event()).encode(),
            b'{"event_id": "broken", "input_tokens": ',
            json.dumps(event()).encode(),
            b"\xff\xfe not utf-8",
            json.dumps(event()).encode(),
        ]
    )
    response = await post(client, body, NDJSON)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 3,
        "duplicates": 0,
        "rejected": 2,
        "errors": [
            {
                "index": 1,
                "event_id": None,
                "errors": [
                    {
                        "field": None,
                        "message": "the line is not valid JSON: Expecting value at column 40",
                    }
                ],
            },
            {
                "index": 3,
                "event_id": None,
                "errors": [
                    {
                        "field": None,
                        "message": "the line is not valid JSON: invalid UTF-8 at byte 0",
                    }
                ],
            },
        ],
    }
    assert await stored_requests(client) == 3


async def test_ndjson_line_that_is_json_but_not_an_object_is_rejected_on_its_own(
    client: httpx.AsyncClient,
) -> None:
    body = ndjson(event(), [event()], 42)
    response = await post(client, body, NDJSON)
    assert response.status_code == 200, response.text
    assert [(error["index"], error["errors"]) for error in response.json()["errors"]] == [
        (1, [{"field": None, "message": "an event must be a JSON object, got an array"}]),
        (2, [{"field": None, "message": "an event must be a JSON object, got an integer"}]),
    ]


async def test_ndjson_of_only_broken_lines_is_a_bad_request(client: httpx.AsyncClient) -> None:
    error = error_of(await post(client, b"{oops\nnot json\n", NDJSON), 400)
    assert error == {
        "code": "bad_request",
        "message": "the body is not valid NDJSON: no line is valid JSON "
        "(the first: Expecting property name enclosed in double quotes at column 2)",
    }


async def test_ndjson_of_only_blank_lines_is_a_bad_request(client: httpx.AsyncClient) -> None:
    error = error_of(await post(client, b"\n \n\r\n", NDJSON), 400)
    assert error == {"code": "bad_request", "message": "the body is empty"}


async def test_ndjson_line_holding_a_batch_is_not_unwrapped(client: httpx.AsyncClient) -> None:
    response = await post(client, ndjson({"events": [event()]}), NDJSON)
    assert response.status_code == 422
    assert response.json()["errors"][0]["errors"] == [
        {"field": "events", "message": "is not a known field"},
        {"field": "event_id", "message": "is required"},
        {"field": "occurred_at", "message": "is required"},
        {"field": "tenant", "message": "is required"},
        {"field": "model", "message": "is required"},
        {"field": "input_tokens", "message": "is required"},
        {"field": "output_tokens", "message": "is required"},
    ]


# gzip


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(JSON, batch(3)), (NDJSON, ndjson(event(), event(), event()))],
    ids=["json", "ndjson"],
)
async def test_gzip_body_is_accepted_with_either_content_type(
    client: httpx.AsyncClient, content_type: str, body: bytes
) -> None:
    response = await post(client, gzip.compress(body), content_type, content_encoding="gzip")
    assert response.status_code == 200, response.text
    assert counts(response) == (3, 0, 0)
    assert await stored_requests(client) == 3


async def test_gzip_encoding_name_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await post(client, gzip.compress(batch(1)), content_encoding="GZIP")
    assert response.status_code == 200, response.text


async def test_gzip_of_several_concatenated_members_is_read_whole(
    client: httpx.AsyncClient,
) -> None:
    lines = ndjson(event(), event(), event(), event())
    half = len(lines) // 2
    body = gzip.compress(lines[:half]) + gzip.compress(lines[half:])
    response = await post(client, body, NDJSON, content_encoding="gzip")
    assert response.status_code == 200, response.text
    assert counts(response) == (4, 0, 0)


async def test_gzip_body_sent_in_small_chunks_is_read_whole(client: httpx.AsyncClient) -> None:
    compressed = gzip.compress(batch(20))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(compressed), 7):
            yield compressed[start : start + 7]

    response = await client.post(
        "/v1/events",
        content=chunks(),
        headers={"content-type": JSON, "content-encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert counts(response) == (20, 0, 0)


async def test_gzip_that_decompresses_past_the_body_limit_is_too_large(
    make_client: ClientFactory,
) -> None:
    body = json.dumps({"events": [event(attributes={"pad": "x" * 200}) for _ in range(20)]})
    compressed = gzip.compress(body.encode())
    assert len(compressed) < 2048 < len(body)
    async with make_client(max_body_bytes=2048) as client:
        response = await post(client, compressed, content_encoding="gzip")
        error = error_of(response, 413)
        assert await stored_requests(client) == 0
    assert error == {
        "code": "payload_too_large",
        "message": "the body is larger than the limit of 2,048 bytes",
    }


async def test_gzip_bomb_is_refused_as_too_large(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"\n" * 50_000_000, compresslevel=9)
    assert len(bomb) < 100_000
    error = error_of(await post(client, bomb, NDJSON, content_encoding="gzip"), 413)
    assert error["message"] == "the body is larger than the limit of 10,485,760 bytes"


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip", batch(1), b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic"],
    ids=["text", "plain-json", "bad-header"],
)
async def test_body_that_is_not_gzip_but_says_so_is_a_bad_request(
    client: httpx.AsyncClient, body: bytes
) -> None:
    error = error_of(await post(client, body, content_encoding="gzip"), 400)
    assert error["code"] == "bad_request"
    assert error["message"].startswith("the body is not valid gzip: ")


@pytest.mark.parametrize("cut", [1, 8, 20])
async def test_truncated_gzip_is_a_bad_request(client: httpx.AsyncClient, cut: int) -> None:
    compressed = gzip.compress(batch(5))
    response = await post(client, compressed[:-cut], content_encoding="gzip")
    assert error_of(response, 400) == {
        "code": "bad_request",
        "message": "the gzip body is truncated",
    }
    assert await stored_requests(client) == 0


async def test_empty_gzip_body_is_a_bad_request(client: httpx.AsyncClient) -> None:
    error = error_of(await post(client, b"", content_encoding="gzip"), 400)
    assert error["code"] == "bad_request"


async def test_gzip_followed_by_garbage_is_a_bad_request(client: httpx.AsyncClient) -> None:
    body = gzip.compress(batch(1)) + b"trailing garbage"
    error = error_of(await post(client, body, content_encoding="gzip"), 400)
    assert error["message"].startswith("the body is not valid gzip: ")


# bodies that are not events


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is empty"),
        (b"  \n\t ", "the body is empty"),
        (b"null", 'the body must be an event object or {"events": [...]}'),
        (b"42", 'the body must be an event object or {"events": [...]}'),
        (b'"evt-1"', 'the body must be an event object or {"events": [...]}'),
        (json.dumps([event()]).encode(), 'the body must be an event object or {"events": [...]}'),
        (
            b'{"model": "m"} trailing',
            "the body is not valid JSON: Extra data: line 1 column 16 (char 15)",
        ),
        (
            b'{"model": "m"}\n{"model": "m"}',
            "the body is not valid JSON: Extra data: line 2 column 1 (char 15)",
        ),
        (
            b'{"events": [{"event_id": "e1", ',
            "the body is not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 32 (char 31)",
        ),
        (
            b'{"events": [{"event_id": "e1"',
            "the body is not valid JSON: Expecting ',' delimiter: line 1 column 30 (char 29)",
        ),
        (
            b"{'event_id': 'single-quoted'}",
            "the body is not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 2 (char 1)",
        ),
        (b'{"input_tokens": NaN}', "the body is not valid JSON: NaN is not a JSON value"),
        (b'{"input_tokens": Infinity}', "the body is not valid JSON: Infinity is not a JSON value"),
        (
            b'{"input_tokens": -Infinity}',
            "the body is not valid JSON: -Infinity is not a JSON value",
        ),
        (b"[" * 5_000, "the body is not valid JSON: nested too deeply"),
        (b'{"a":' * 5_000, "the body is not valid JSON: nested too deeply"),
        (b'{"event_id": "caf\xe9"}', "the body is not valid JSON: invalid UTF-8 at byte 17"),
        (
            b"\xef\xbb\xbf" + json.dumps(event()).encode(),
            "the body is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): "
            "line 1 column 1 (char 0)",
        ),
        (b'{"events": []}', "the body holds no events"),
        (b'{"events": {}}', '"events" must be an array of event objects'),
        (b'{"events": null}', '"events" must be an array of event objects'),
        (
            json.dumps({"events": [event()], "extra": 1}).encode(),
            'a batch holds only "events"; unexpected: extra',
        ),
        (
            b'{"events": [], "events": []}',
            '"events" appears more than once',
        ),
    ],
    ids=[
        "empty",
        "whitespace",
        "null",
        "number",
        "string",
        "array",
        "trailing-garbage",
        "two-objects",
        "truncated-after-comma",
        "truncated-in-an-event",
        "single-quotes",
        "nan",
        "infinity",
        "minus-infinity",
        "deep-arrays",
        "deep-objects",
        "latin-1",
        "byte-order-mark",
        "no-events",
        "events-object",
        "events-null",
        "extra-member",
        "events-twice",
    ],
)
async def test_body_that_is_not_an_event_or_a_batch_is_a_bad_request(
    client: httpx.AsyncClient, body: bytes, message: str
) -> None:
    error = error_of(await post(client, body), 400)
    assert error == {"code": "bad_request", "message": message}
    assert await stored_requests(client) == 0


@pytest.mark.parametrize(
    ("name", "quoted"),
    [(b"\\ud800", "\\ud800"), (b"k" * 1000, "k" * 128 + "…")],
    ids=["lone-surrogate", "1000-characters"],
)
async def test_unexpected_batch_member_is_named_safely_in_the_error(
    client: httpx.AsyncClient, name: bytes, quoted: str
) -> None:
    body = b'{"events": [], "' + name + b'": 1}'
    error = error_of(await post(client, body), 400)
    assert error["message"] == f'a batch holds only "events"; unexpected: {quoted}'


# content types and encodings


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json-seq",
        "",
    ],
)
async def test_other_content_type_is_unsupported(
    client: httpx.AsyncClient, content_type: str
) -> None:
    error = error_of(await post(client, batch(1), content_type), 415)
    assert error["code"] == "unsupported_media_type"
    assert error["message"].startswith(
        "Content-Type must be application/json or application/x-ndjson, got "
    )
    assert await stored_requests(client) == 0


@pytest.mark.parametrize(
    "content_type", ["application/ndjson", "application/jsonl", "application/x-jsonlines"]
)
async def test_other_names_of_ndjson_are_read_as_ndjson(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await post(client, ndjson(event(), event()), content_type)
    assert response.status_code == 200, response.text
    assert counts(response) == (2, 0, 0)


async def test_missing_content_type_is_unsupported(client: httpx.AsyncClient) -> None:
    error = error_of(await post(client, batch(1), None), 415)
    assert error == {
        "code": "unsupported_media_type",
        "message": "Content-Type must be application/json or application/x-ndjson, got none",
    }


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "compress", "gzip, br"])
async def test_content_encoding_other_than_gzip_is_unsupported(
    client: httpx.AsyncClient, encoding: str
) -> None:
    error = error_of(await post(client, batch(1), content_encoding=encoding), 415)
    assert error == {
        "code": "unsupported_media_type",
        "message": f"Content-Encoding must be gzip or absent, got {encoding}",
    }


async def test_identity_content_encoding_is_the_same_as_none(client: httpx.AsyncClient) -> None:
    response = await post(client, batch(1), content_encoding="identity")
    assert response.status_code == 200, response.text


# limits


async def test_batch_of_more_than_the_most_events_is_too_large(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_events_per_request=5) as client:
        error = error_of(await post(client, batch(6)), 413)
        assert await stored_requests(client) == 0
        accepted = await post(client, batch(5))
    assert error == {
        "code": "payload_too_large",
        "message": "the body holds more than 5 events; at most 5 are accepted at once",
    }
    assert accepted.status_code == 200
    assert counts(accepted) == (5, 0, 0)


async def test_ndjson_of_more_than_the_most_events_is_too_large(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_events_per_request=5) as client:
        response = await post(client, ndjson(*(event() for _ in range(6))), NDJSON)
        error = error_of(response, 413)
        assert await stored_requests(client) == 0
        accepted = await post(client, ndjson(*(event() for _ in range(5))) + b"\n\n", NDJSON)
    assert error["message"] == "the body holds more than 5 events; at most 5 are accepted at once"
    assert counts(accepted) == (5, 0, 0)


async def test_invalid_events_count_towards_the_most_events(make_client: ClientFactory) -> None:
    async with make_client(max_events_per_request=5) as client:
        body = json.dumps({"events": [event(), 1, 2, 3, 4, 5]}).encode()
        error_of(await post(client, body), 413)
        assert await stored_requests(client) == 0


async def test_batch_of_10001_events_is_too_large_by_default(client: httpx.AsyncClient) -> None:
    error = error_of(await post(client, batch(10_001)), 413)
    assert error == {
        "code": "payload_too_large",
        "message": "the body holds more than 10,000 events; at most 10,000 are accepted at once",
    }
    assert await stored_requests(client) == 0


async def test_body_over_the_byte_limit_is_too_large(make_client: ClientFactory) -> None:
    body = json.dumps(event(attributes={"pad": "x" * 250})).encode()
    padded = body + b" " * (2048 - len(body))
    async with make_client(max_body_bytes=2048) as client:
        error = error_of(await post(client, padded + b" "), 413)
        assert await stored_requests(client) == 0
        at_the_limit = await post(client, padded)
    assert error == {
        "code": "payload_too_large",
        "message": "the body is larger than the limit of 2,048 bytes",
    }
    assert at_the_limit.status_code == 200, at_the_limit.text


async def test_body_over_the_limit_is_refused_whatever_content_length_says(
    make_client: ClientFactory,
) -> None:
    body = batch(20)
    assert len(body) > 2048
    async with make_client(max_body_bytes=2048) as client:
        response = await post(client, body, content_length="100")
        error = error_of(response, 413)
        assert await stored_requests(client) == 0
    assert error["message"] == "the body is larger than the limit of 2,048 bytes"


async def test_content_length_over_the_limit_is_refused_before_reading(
    make_client: ClientFactory,
) -> None:
    async with make_client(max_body_bytes=2048) as client:
        response = await post(client, batch(1), content_length="999999999")
    assert error_of(response, 413)["code"] == "payload_too_large"


# the answer


async def test_batch_of_only_invalid_events_is_unprocessable_with_the_same_shape(
    client: httpx.AsyncClient,
) -> None:
    body = json.dumps(
        {"events": [event(event_id="bad-0", model=...), event(event_id="bad-1", input_tokens=-1)]}
    ).encode()
    response = await post(client, body)
    assert response.status_code == 422
    assert response.json() == {
        "accepted": 0,
        "duplicates": 0,
        "rejected": 2,
        "errors": [
            {
                "index": 0,
                "event_id": "bad-0",
                "errors": [{"field": "model", "message": "is required"}],
            },
            {
                "index": 1,
                "event_id": "bad-1",
                "errors": [{"field": "input_tokens", "message": "must be at least 0, got -1"}],
            },
        ],
    }
    assert await stored_requests(client) == 0


async def test_batch_of_only_duplicates_is_a_success_not_a_rejection(
    client: httpx.AsyncClient,
) -> None:
    body = batch(2)
    assert counts(await post(client, body)) == (2, 0, 0)
    response = await post(client, body)
    assert response.status_code == 200
    assert counts(response) == (0, 2, 0)
