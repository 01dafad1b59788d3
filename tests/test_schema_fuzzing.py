"""Every operation of `/openapi.json`, fuzzed against a running server and a real database:
no answer is a 5xx, and every answer is one the document describes (status, headers, body)."""

import gzip
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import UNLIMITED_ENV, bearer, scratch_database
from tests.servers import Server, running_server
from tokenpulse.app import create_app
from tokenpulse.database import async_url
from tokenpulse.keys.store import create_key
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

# The widest window a service may accept, so that as many as may be of the instants the generator
# makes up reach the database and every aggregate rather than stop at the window.
WIDE_WINDOW_ENV = {"TOKENPULSE_MAX_EVENT_AGE": "P400D", "TOKENPULSE_MAX_EVENT_LEAD": "P7D"}

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


def _encoded(ctx: schemathesis.SerializationContext, body: bytes) -> bytes:
    """`body` gzipped when the generated request says it is, so that gzip is fuzzed too."""
    headers: Mapping[str, Any] = ctx.case.headers or {}
    return gzip.compress(body) if headers.get("Content-Encoding") == "gzip" else body


@schemathesis.serializer("application/json")
def _json(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    # Bodies generated to break the schema may come as raw bytes.
    return _encoded(ctx, value if isinstance(value, bytes) else json.dumps(value).encode())


@schemathesis.serializer("application/x-protobuf")
def _protobuf(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    # What is generated for a binary body; anything else, as JSON text, which is no protobuf.
    return _encoded(ctx, value if isinstance(value, bytes) else json.dumps(value).encode())


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    if isinstance(value, bytes):
        return _encoded(ctx, value)
    lines = value if isinstance(value, list) else [value]
    return _encoded(ctx, b"".join(json.dumps(line).encode() + b"\n" for line in lines))


@pytest.fixture(scope="module")
async def fuzzed(
    server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Server, str]]:
    """A server on a database of its own, and a platform admin key for it."""
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url, **UNLIMITED_ENV, **WIDE_WINDOW_ENV}
        with running_server(tmp_path_factory.mktemp("fuzzed"), env=env) as server:
            engine = create_async_engine(async_url(url))
            async with engine.begin() as connection:
                admin = await create_key(connection, name="fuzz", scope=Scope.ADMIN, tenant=None)
            await engine.dispose()
            yield server, admin.token


def documented() -> dict[str, Any]:
    """The document the service serves; building it needs no database connection."""
    return create_app(Settings(database_url="postgresql://unused@127.0.0.1/unused")).openapi()


schema = schemathesis.openapi.from_dict(documented())


@pytest.mark.process
def test_the_fuzzed_document_is_the_one_the_server_serves(fuzzed: tuple[Server, str]) -> None:
    server, _ = fuzzed
    assert httpx.get(f"{server.url}/openapi.json").json() == documented()


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@pytest.mark.process
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case[Any], fuzzed: tuple[Server, str]
) -> None:
    server, admin = fuzzed
    case.call_and_validate(base_url=server.url, headers=bearer(admin), checks=CHECKS)
