"""`/openapi.json` as a client's tools read it: every operation named, summarised and described,
the key each needs declared and true to what the server enforces, and a client generated from
it that works against a real server."""

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import UNLIMITED_ENV, ClientFactory, Keys, bearer
from tests.servers import running_server
from tokenpulse.app import create_app
from tokenpulse.openapi import BEARER
from tokenpulse.scopes import Scope
from tokenpulse.settings import Settings

# Enough to reach each route; what it then answers beyond its key's check does not matter here.
PATH_VALUES = {
    "model": "m-large",
    "key_id": "0123456789abcdef",
    "budget_id": "bud_0123456789abcdef",
    "webhook_id": "wh_0123456789abcdef",
}
GENERATED = "tokenpulse_client"


def documented() -> dict[str, Any]:
    """The document the service serves; building it needs no database connection."""
    return create_app(Settings(database_url="postgresql://unused@127.0.0.1/unused")).openapi()


Operation = tuple[str, str, dict[str, Any]]


@pytest.fixture(scope="module")
def operations() -> list[Operation]:
    """(method, path, operation) of every operation in the document."""
    return [
        (method.upper(), path, operation)
        for path, methods in documented()["paths"].items()
        for method, operation in methods.items()
    ]


def required_scope(operation: dict[str, Any]) -> str | None:
    """The scope an operation always needs a key of, or None if it may answer without one."""
    requirements = operation.get("security", [])
    if not requirements or {} in requirements:
        return None
    (requirement,) = requirements
    (scope,) = requirement[BEARER]
    return str(scope)


def url_of(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda name: PATH_VALUES[name.group(1)], path)


def test_every_operation_has_a_unique_readable_id_a_summary_and_a_description(
    operations: list[Operation],
) -> None:
    ids = [operation["operationId"] for _, _, operation in operations]

    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", id_) for id_ in ids), ids
    assert all(operation.get("summary") for _, _, operation in operations)
    assert all(operation.get("description") for _, _, operation in operations)
    assert {"ingestEvents", "getTotals", "getUsage", "createKey"} <= set(ids)


def test_every_key_an_operation_takes_is_a_bearer_key_whose_scope_it_names(
    operations: list[Operation],
) -> None:
    document = documented()
    scheme = document["components"]["securitySchemes"][BEARER]
    secured = [operation for _, _, operation in operations if "security" in operation]

    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for operation in secured:
        for requirement in operation["security"]:
            assert requirement == {} or requirement == {BEARER: [operation["x-required-scope"]]}
        assert Scope(operation["x-required-scope"])
    for _, _, operation in operations:
        if (scope := required_scope(operation)) is not None:
            assert f"Needs a key with the `{scope}` scope." in operation["description"]


def test_only_the_health_checks_answer_without_a_key_and_metrics_may_ask_for_one(
    operations: list[Operation],
) -> None:
    open_to_all = {op["operationId"] for _, _, op in operations if "security" not in op}
    optional = {op["operationId"] for _, _, op in operations if {} in op.get("security", [{}])}

    assert open_to_all == {"getHealth", "getReadiness"}
    assert optional - open_to_all == {"getMetrics"}


async def test_each_operation_refuses_a_request_without_a_key_exactly_when_it_declares_one(
    make_client: ClientFactory, operations: list[Operation]
) -> None:
    async with make_client(token=None) as anonymous:
        default = {
            op["operationId"]: (await anonymous.request(method, url_of(path))).status_code
            for method, path, op in operations
        }
    async with make_client(token=None, metrics_public=False) as anonymous:
        metrics_closed = {
            op["operationId"]: (await anonymous.request(method, url_of(path))).status_code
            for method, path, op in operations
        }

    for _, _, operation in operations:
        name = operation["operationId"]
        assert (default[name] == 401) == (required_scope(operation) is not None), name
        assert (metrics_closed[name] == 401) == ("security" in operation), name


async def test_each_operation_admits_exactly_the_keys_whose_scope_covers_the_one_it_names(
    make_client: ClientFactory, keys: Keys, operations: list[Operation]
) -> None:
    tokens = {scope: await keys.create(scope) for scope in Scope}
    refused: dict[str, set[Scope]] = {}
    expected: dict[str, set[Scope]] = {}
    async with make_client(token=None) as client:
        for method, path, operation in operations:
            if (scope := required_scope(operation)) is None:
                continue
            name = operation["operationId"]
            expected[name] = {key for key in Scope if not key.allows(Scope(scope))}
            refused[name] = set()
            for key, token in tokens.items():
                answer = await client.request(method, url_of(path), headers=bearer(token))
                assert answer.status_code != 401, (name, key)
                if answer.status_code == 403:
                    refused[name].add(key)

    assert expected
    assert refused == expected


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """A Python client generated by openapi-python-client from the document, imported."""
    tmp_path = tmp_path_factory.mktemp("generated")
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(documented()))
    # Left unformatted: the generated code need not find ruff on the PATH.
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")
    output = tmp_path / GENERATED
    generator = [sys.executable, "-m", "openapi_python_client", "generate"]
    options = ["--path", str(document), "--meta", "none", "--config", str(config)]
    generated = subprocess.run(
        [*generator, *options, "--output-path", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(GENERATED)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.partition(".")[0] == GENERATED]:
            del sys.modules[name]


def generated(name: str) -> Any:
    return importlib.import_module(f"{GENERATED}.{name}")


@pytest.mark.process
def test_the_generated_client_has_a_function_named_after_each_operation(
    generated_client: ModuleType, operations: list[Operation]
) -> None:
    api = Path(generated_client.__file__ or "").parent / "api"
    functions = {path.stem for path in api.glob("*/*.py") if path.stem != "__init__"}

    assert functions == {snake_case(op["operationId"]) for _, _, op in operations}


@pytest.mark.process
async def test_a_generated_client_creates_keys_sends_an_event_and_reads_its_totals(
    db: AsyncEngine, keys: Keys, database_url: str, tmp_path: Path, generated_client: ModuleType
) -> None:
    models = generated("models")
    create_key = generated("api.keys.create_key")
    ingest_events = generated("api.ingest.ingest_events")
    get_totals = generated("api.aggregates.get_totals")
    authenticated = generated_client.AuthenticatedClient
    event = models.UsageEvent(
        event_id="req-1",
        occurred_at=datetime.now(UTC),
        tenant="acme",
        model="m-large",
        input_tokens=120,
        output_tokens=30,
    )
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV}
    with running_server(tmp_path, env=env) as server:
        async with authenticated(base_url=server.url, token=keys.admin) as admin:
            gateway_key, reader_key = [
                await create_key.asyncio(
                    client=admin, body=models.KeyRequest(name=name, scope=scope)
                )
                for name, scope in (("gateway", models.Scope.INGEST), ("board", models.Scope.READ))
            ]
        async with (
            authenticated(base_url=server.url, token=gateway_key.key) as gateway,
            authenticated(base_url=server.url, token=reader_key.key) as reader,
        ):
            sent = await ingest_events.asyncio(client=gateway, body=event)
            refused = await ingest_events.asyncio(client=reader, body=event)
            totals = await get_totals.asyncio(
                client=reader, window=models.GetTotalsWindowType0("24h"), group_by="tenant"
            )

    assert isinstance(gateway_key, models.CreatedKeyAnswer)
    assert gateway_key.scope is models.Scope.INGEST
    assert isinstance(sent, models.IngestAnswer)
    assert (sent.accepted, sent.duplicates, sent.rejected) == (1, 0, 0)
    assert isinstance(refused, models.ErrorAnswer)
    assert refused.error.code == "forbidden"
    assert isinstance(totals, models.TotalsAnswer)
    assert [(group.tenant, group.total_tokens) for group in totals.results] == [("acme", 150)]
