"""`GET /v1/events/export`: the stored events of a range, every field, in order, resumable."""

import asyncio
import base64
import gzip
import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, UNLIMITED_ENV, ClientFactory, Keys, bearer, empty_all_but_keys
from tests.factories import event, measures, post_accepted
from tests.servers import child_environment, running_server
from tokenpulse.instants import format_rfc3339

START = NOW - timedelta(days=2)
FIELDS = (
    "event_id",
    "occurred_at",
    "tenant",
    "project",
    "model",
    "api_key_id",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "attributes",
)


def as_stored(sent: dict[str, Any]) -> dict[str, Any]:
    """An event as an export answers it: every field, defaults filled in, instants in UTC."""
    defaults = {
        "project": "default",
        "api_key_id": None,
        "cached_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "reasoning_tokens": 0,
        "attributes": None,
    }
    stored = {name: sent.get(name, defaults.get(name)) for name in FIELDS}
    occurred_at = datetime.fromisoformat(sent["occurred_at"]).astimezone(UTC)
    stored["occurred_at"] = occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return stored


def export_order(line: dict[str, Any]) -> tuple[str, str, str, str]:
    return line["model"], line["occurred_at"], line["event_id"], line["tenant"]


def lines_of(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.text == "" or answer.text.endswith("\n")
    return [json.loads(line) for line in answer.text.splitlines()]


async def export(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    params.setdefault("start", format_rfc3339(START))
    return lines_of(await client.get("/v1/events/export", params=params))


async def export_in_pages(client: httpx.AsyncClient, limit: int, **params: Any) -> list[Any]:
    """Every page of an export, each the events it held, following the cursors to the end."""
    pages = []
    answer = await client.get(
        "/v1/events/export", params={"start": format_rfc3339(START), "limit": limit, **params}
    )
    while True:
        lines = lines_of(answer)
        cursor = lines.pop()["next_cursor"] if lines and "next_cursor" in lines[-1] else None
        assert len(lines) <= limit
        pages.append(lines)
        if cursor is None:
            return pages
        assert len(lines) == limit
        answer = await client.get(
            "/v1/events/export", params={"cursor": cursor, "limit": limit, **params}
        )


def mixed_events() -> list[dict[str, Any]]:
    """Events of two tenants, three models and every optional field, with ties on occurred_at
    and one event id that both tenants use."""
    tie = NOW - timedelta(hours=3)
    return [
        event(at=tie, event_id="shared", tenant="acme", model="m-small"),
        event(at=tie, event_id="shared", tenant="globex", model="m-small"),
        event(at=tie, tenant="acme", model="m-small", api_key_id="key-1"),
        event(
            at=NOW - timedelta(hours=5, microseconds=7),
            tenant="globex",
            model="m-large",
            project="search",
            api_key_id="key-2",
            input_tokens=5000,
            cached_input_tokens=1000,
            cache_write_input_tokens=200,
            output_tokens=900,
            reasoning_tokens=300,
            attributes={"region": "eu-west", "note": 'say "hi" — ünïcode'},
        ),
        event(at=NOW - timedelta(days=1), tenant="acme", model="m-large"),
        event(occurred_at="2026-11-27T13:30:00.250+02:00", tenant="acme", model="m-tiny"),
        *(
            event(at=NOW - timedelta(minutes=m), tenant="globex", model="m-tiny")
            for m in range(1, 10)
        ),
    ]


async def test_an_export_holds_every_stored_event_of_its_range_with_every_field(
    client: httpx.AsyncClient,
) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)
    before = event(at=START - timedelta(microseconds=1))
    at_end = event(at=NOW)
    await post_accepted(client, before, at_end)

    exported = await export(client, end=format_rfc3339(NOW))

    assert exported == sorted((as_stored(e) for e in sent), key=export_order)
    totals = await client.get(
        "/v1/totals", params={"start": format_rfc3339(START), "end": format_rfc3339(NOW)}
    )
    assert totals.json()["results"][0] == {
        **measures(*exported),
        "cost": None,
    }


async def test_an_export_sent_to_an_empty_service_is_stored_as_it_was(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)
    first = await client.get("/v1/events/export", params={"start": format_rfc3339(START)})
    await empty_all_but_keys(db)

    again = await client.post(
        "/v1/events", content=first.content, headers={"Content-Type": "application/x-ndjson"}
    )

    assert again.json() == {"accepted": len(sent), "duplicates": 0, "rejected": 0, "errors": []}
    second = await client.get("/v1/events/export", params={"start": format_rfc3339(START)})
    assert second.content == first.content


async def test_filters_narrow_an_export_as_they_narrow_aggregates(
    client: httpx.AsyncClient,
) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)
    stored = sorted((as_stored(e) for e in sent), key=export_order)

    assert await export(client, tenant="globex") == [e for e in stored if e["tenant"] == "globex"]
    assert await export(client, model=["m-tiny", "m-small"]) == [
        e for e in stored if e["model"] in ("m-tiny", "m-small")
    ]
    assert await export(client, project="search", api_key_id="key-2") == [
        e for e in stored if e["project"] == "search"
    ]
    assert await export(client, model="m-none") == []


async def test_a_tenants_key_exports_its_own_events_only(
    client: httpx.AsyncClient, make_client: ClientFactory, keys: Keys
) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)
    own = sorted((as_stored(e) for e in sent if e["tenant"] == "acme"), key=export_order)

    async with make_client(token=await keys.create("read", tenant="acme")) as acme:
        assert await export(acme) == own
        assert await export(acme, tenant="globex") == []
        paged = await export_in_pages(acme, 2)
    assert [line for page in paged for line in page] == own


@pytest.mark.parametrize("limit", [1, 2, 3, 15, 16])
async def test_pages_followed_by_their_cursors_hold_the_export_once(
    client: httpx.AsyncClient, limit: int
) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)

    pages = await export_in_pages(client, limit)

    assert [line for page in pages for line in page] == await export(client)
    # A page that ends the export exactly still hands on a cursor; the page after it is empty.
    assert (pages[-1] == []) == (len(sent) % limit == 0)


async def test_a_cursor_keeps_to_its_range_and_later_pages_hold_events_stored_after_their_place(
    client: httpx.AsyncClient,
) -> None:
    sent = [event(at=NOW - timedelta(minutes=m), model="m-tiny") for m in range(1, 5)]
    await post_accepted(client, *sent)
    first = lines_of(
        await client.get(
            "/v1/events/export",
            params={"start": format_rfc3339(START), "end": format_rfc3339(NOW), "limit": 2},
        )
    )
    cursor = first.pop()["next_cursor"]

    # Stored after the first page: one ahead of its position, one past its end.
    later = event(at=NOW - timedelta(seconds=1), model="m-tiny")
    past_the_end = event(at=NOW + timedelta(seconds=1), model="m-tiny")
    await post_accepted(client, later, past_the_end)
    rest = lines_of(await client.get("/v1/events/export", params={"cursor": cursor}))

    assert first + rest == sorted((as_stored(e) for e in [*sent, later]), key=export_order)


async def test_gzip_when_asked(client: httpx.AsyncClient) -> None:
    sent = mixed_events()
    await post_accepted(client, *sent)
    plain = await client.get(
        "/v1/events/export",
        params={"start": format_rfc3339(START)},
        headers={"Accept-Encoding": "identity"},
    )
    assert "content-encoding" not in plain.headers

    packed = await client.get(
        "/v1/events/export",
        params={"start": format_rfc3339(START)},
        headers={"Accept-Encoding": "gzip"},
    )

    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content == plain.content
    assert gzip.decompress(await _raw(client)) == plain.content
    refused = await client.get(
        "/v1/events/export",
        params={"start": format_rfc3339(START)},
        headers={"Accept-Encoding": "gzip;q=0, identity"},
    )
    assert "content-encoding" not in refused.headers
    anything_but_gzip = await client.get(
        "/v1/events/export",
        params={"start": format_rfc3339(START)},
        headers={"Accept-Encoding": "gzip;q=0, *"},
    )
    assert "content-encoding" not in anything_but_gzip.headers


async def _raw(client: httpx.AsyncClient) -> bytes:
    """The bytes of a gzip export as they were sent, before httpx decodes them."""
    async with client.stream(
        "GET",
        "/v1/events/export",
        params={"start": format_rfc3339(START)},
        headers={"Accept-Encoding": "gzip"},
    ) as answer:
        return b"".join([chunk async for chunk in answer.aiter_raw()])


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({}, "start", "is required (or a cursor)"),
        ({"start": "yesterday"}, "start", "must be an RFC 3339 timestamp"),
        ({"start": format_rfc3339(START), "limit": 0}, "limit", "must be at least 1"),
        ({"cursor": "not-a-cursor"}, "cursor", "is not a cursor an export answered"),
        (
            {"cursor": "WzEsMl0", "start": format_rfc3339(START)},
            "start",
            "is carried by the cursor",
        ),
    ],
)
async def test_a_bad_parameter_is_named(
    client: httpx.AsyncClient, params: dict[str, Any], field: str, message: str
) -> None:
    answer = await client.get("/v1/events/export", params=params)

    assert answer.status_code == 422, answer.text
    problem = answer.json()["error"]["errors"][0]
    assert problem["field"] == field
    assert message in problem["message"]


async def test_a_cursor_asked_with_other_filters_is_refused(client: httpx.AsyncClient) -> None:
    await post_accepted(client, *mixed_events())
    page = await export(client, tenant="globex", limit=1)
    cursor = page[-1]["next_cursor"]

    answer = await client.get("/v1/events/export", params={"cursor": cursor, "tenant": "acme"})

    assert answer.status_code == 422
    assert answer.json()["error"]["errors"] == [
        {
            "field": "cursor",
            "message": "belongs to an export with other filters; repeat the filters it was "
            "asked with",
        }
    ]


async def test_a_cursor_edited_to_name_a_model_outside_the_filter_is_refused(
    client: httpx.AsyncClient,
) -> None:
    await post_accepted(client, *mixed_events())
    cursor = (await export(client, model="m-tiny", limit=1))[-1]["next_cursor"]
    fields = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    fields[3] = "m-large"
    edited = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()

    answer = await client.get("/v1/events/export", params={"cursor": edited, "model": "m-tiny"})

    assert answer.status_code == 422
    assert answer.json()["error"]["errors"][0]["field"] == "cursor"


async def test_an_ingest_key_may_not_export(make_client: ClientFactory, keys: Keys) -> None:
    async with make_client(token=await keys.create("ingest")) as ingester:
        answer = await ingester.get("/v1/events/export", params={"start": format_rfc3339(START)})
    assert answer.status_code == 403


# Through a real server: what only sockets show.

EXPORTED = 40_000
"""Events enough that their export fills every buffer between the server and a client that
reads nothing: about 12 MB of lines."""
SEND_TIMEOUT = 2
HANG = 30.0


async def post_many(url: str, token: str, count: int) -> None:
    now = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=url, headers=bearer(token), timeout=HANG) as http:
        for batch in range(0, count, 10_000):
            events = [
                event(at=now - timedelta(seconds=i), tenant="acme", api_key_id=f"key-{i % 97}")
                for i in range(batch, min(count, batch + 10_000))
            ]
            answer = await http.post("/v1/events", json={"events": events})
            assert answer.json()["accepted"] == len(events), answer.text


async def test_a_client_that_stops_reading_is_cut_off_and_frees_its_slot(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path
) -> None:
    env = {
        **UNLIMITED_ENV,
        "TOKENPULSE_DATABASE_URL": database_url,
        "TOKENPULSE_SEND_TIMEOUT": str(SEND_TIMEOUT),
    }
    acme = await keys.create("read", tenant="acme")
    with running_server(tmp_path, "--workers", "1", env=env) as server:
        await post_many(server.url, keys.admin, EXPORTED)
        start = format_rfc3339(datetime.now(UTC) - timedelta(days=1))
        stalled = socket.create_connection(("127.0.0.1", server.port), timeout=HANG)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.sendall(
            f"GET /v1/events/export?start={start.replace('+', '%2B')} HTTP/1.1\r\n"
            f"Host: tokenpulse\r\nAuthorization: Bearer {acme}\r\n\r\n".encode()
        )
        assert stalled.recv(1024).startswith(b"HTTP/1.1 200")

        async with httpx.AsyncClient(
            base_url=server.url, headers=bearer(acme), timeout=HANG
        ) as http:
            busy = await http.get("/v1/events/export", params={"start": start})
            assert busy.status_code == 429, busy.text
            assert busy.headers["retry-after"] == "5"

            # Nothing read for longer than the send timeout: the server closes the connection,
            # and the export's slot and transaction go with it.
            received = await asyncio.to_thread(_read_after_stalling, stalled, SEND_TIMEOUT * 3)
            assert len(received) < EXPORTED * 100

            whole = await http.get("/v1/events/export", params={"start": start})
            assert whole.status_code == 200
            assert len(whole.text.splitlines()) == EXPORTED

        async with db.connect() as connection:
            open_exports = await connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name = 'tokenpulse-exports' AND state <> 'idle'"
                )
            )
        assert open_exports == 0
    assert "Traceback" not in server.log()


def _read_after_stalling(sock: socket.socket, stall: float) -> bytes:
    """Sleep without reading, then read until the server closes the connection."""
    time.sleep(stall)
    received = b""
    try:
        while chunk := sock.recv(1 << 20):
            received += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return received


# `tokenpulse export`: the same lines, from the database directly.


def run_export(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "tokenpulse", "export", *args],
        env=child_environment({"TOKENPULSE_DATABASE_URL": database_url}),
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.mark.process
async def test_the_command_writes_what_the_endpoint_answers_and_resumes_a_cut_file(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    await post_accepted(client, *mixed_events())
    bounds = ["--start", format_rfc3339(START), "--end", format_rfc3339(NOW)]
    answer = await client.get(
        "/v1/events/export", params={"start": format_rfc3339(START), "end": format_rfc3339(NOW)}
    )
    lines = answer.content.splitlines(keepends=True)

    printed = run_export(database_url, *bounds, "--tenant", "globex")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == b"".join(line for line in lines if b'"tenant":"globex"' in line)

    # Cut in the middle of a line, as an interrupted run leaves a file.
    cut = tmp_path / "events.ndjson"
    cut.write_bytes(b"".join(lines[:5]) + lines[5][:20])
    resumed = run_export(database_url, *bounds, "--output", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert cut.read_bytes() == answer.content
    assert resumed.stderr.decode().endswith(
        f"exported {len(lines) - 5:,} events from {format_rfc3339(START)} to "
        f"{format_rfc3339(NOW)} to {cut}\n"
    )

    packed = tmp_path / "events.ndjson.gz"
    written = run_export(database_url, *bounds, "--output", str(packed), "--gzip")
    assert written.returncode == 0, written.stderr
    assert gzip.decompress(packed.read_bytes()) == answer.content


@pytest.mark.process
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--resume", "--output", "{file}"],
            "--resume needs the --end the export was started with",
        ),
        (["--output", "{file}"], "exists: carry it on with --resume, or name another file"),
        (["--gzip"], "--gzip and --resume write a file: name it with --output"),
        (
            ["--resume", "--gzip", "--end", format_rfc3339(NOW), "--output", "{file}"],
            "--resume carries on plain NDJSON only",
        ),
        (["--tenant", ""], "tenant: must be 1 to 128 characters"),
    ],
)
async def test_the_command_says_what_stops_it(
    database_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    existing = tmp_path / "events.ndjson"
    existing.write_bytes(b"")

    refused = run_export(
        database_url,
        "--start",
        format_rfc3339(START),
        *(arg.format(file=existing) for arg in args),
    )

    assert refused.returncode == 2
    assert message in refused.stderr.decode()
