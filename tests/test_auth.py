"""Who may call what: every endpoint against every kind of caller, and the keys API itself."""

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import ClientFactory, Keys, Ticker, bearer
from tests.factories import event

Client = httpx.AsyncClient
Headers = dict[str, str]
Response = httpx.Response

# A key that looks right but was never issued.
UNKNOWN = "tp_0123456789abcdef_" + "A" * 43


@dataclass(frozen=True)
class Endpoint:
    name: str
    needs: str | None  # the scope it needs; None: open to anyone
    call: Callable[[httpx.AsyncClient, dict[str, str], Keys], Awaitable[httpx.Response]]
    platform_only: bool = False  # refused (403) to tenant-bound keys of any scope


async def post_event(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.post("/v1/events", json=event(tenant="acme"), headers=headers)


async def get_usage(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    params = {"start": "2026-11-27T00:00:00Z", "bucket": "1h"}
    return await client.get("/v1/usage", params=params, headers=headers)


async def get_totals(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.get("/v1/totals", params={"window": "1h"}, headers=headers)


async def create_key(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    body = {"name": "new", "scope": "read", "tenant": "acme"}
    return await client.post("/v1/keys", json=body, headers=headers)


async def list_keys(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.get("/v1/keys", headers=headers)


async def revoke_key(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    target = (await keys.create("read", tenant="acme")).split("_")[1]
    return await client.delete(f"/v1/keys/{target}", headers=headers)


async def put_launch(client: Client, headers: Headers, keys: Keys) -> Response:
    body = {"launched_at": "2026-11-27T09:00:00Z"}
    return await client.put("/v1/launches/m-large", json=body, headers=headers)


async def get_launches(client: Client, headers: Headers, keys: Keys) -> Response:
    return await client.get("/v1/launches", headers=headers)


async def get_launch(client: Client, headers: Headers, keys: Keys) -> Response:
    await client.put(
        "/v1/launches/m-large",
        json={"launched_at": "2026-11-27T09:00:00Z"},
        headers=bearer(keys.admin),
    )
    return await client.get("/v1/launches/m-large", headers=headers)


async def get_milestones(client: Client, headers: Headers, keys: Keys) -> Response:
    params = {"threshold": "1000", "since": "2026-11-27T00:00:00Z"}
    return await client.get("/v1/milestones", params=params, headers=headers)


async def get_healthz(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.get("/healthz", headers=headers)


async def get_readyz(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.get("/readyz", headers=headers)


async def get_metrics(
    client: httpx.AsyncClient, headers: dict[str, str], keys: Keys
) -> httpx.Response:
    return await client.get("/metrics", headers=headers)


ENDPOINTS = [
    Endpoint("POST /v1/events", "ingest", post_event),
    Endpoint("GET /v1/usage", "read", get_usage),
    Endpoint("GET /v1/totals", "read", get_totals),
    Endpoint("POST /v1/keys", "admin", create_key),
    Endpoint("GET /v1/keys", "admin", list_keys),
    Endpoint("DELETE /v1/keys/{id}", "admin", revoke_key),
    Endpoint("PUT /v1/launches/{model}", "admin", put_launch, platform_only=True),
    Endpoint("GET /v1/launches", "read", get_launches),
    Endpoint("GET /v1/launches/{model}", "read", get_launch),
    Endpoint("GET /v1/milestones", "read", get_milestones),
    Endpoint("GET /healthz", None, get_healthz),
    Endpoint("GET /readyz", None, get_readyz),
    Endpoint("GET /metrics", None, get_metrics),
]
CALLERS = ["no key", "malformed", "unknown", "revoked", "ingest", "read", "admin"]
SUCCESS = {"POST /v1/keys": 201, "PUT /v1/launches/{model}": 201}


def expected_status(endpoint: Endpoint, caller: str, bound: bool) -> int:
    if endpoint.needs is None:
        return 200
    if caller in ("no key", "malformed", "unknown", "revoked"):
        return 401
    if (caller == "admin" or caller == endpoint.needs) and not (bound and endpoint.platform_only):
        return SUCCESS.get(endpoint.name, 200)
    return 403


@pytest.mark.parametrize("bound", [False, True], ids=["platform", "tenant-bound"])
@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
async def test_each_endpoint_answers_each_kind_of_caller_as_its_scope_says(
    make_client: ClientFactory, keys: Keys, endpoint: Endpoint, caller: str, bound: bool
) -> None:
    tenant = "acme" if bound else None
    if caller == "no key":
        headers = {}
    elif caller == "malformed":
        headers = bearer("not-a-key")
    elif caller == "unknown":
        headers = bearer(UNKNOWN)
    elif caller == "revoked":
        token = await keys.create("admin", tenant=tenant)
        await keys.revoke(token)
        headers = bearer(token)
    else:
        headers = bearer(await keys.create(caller, tenant=tenant))

    async with make_client(token=None) as client:
        response = await endpoint.call(client, headers, keys)

    assert response.status_code == expected_status(endpoint, caller, bound), response.text
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthorized"
    if response.status_code == 403:
        assert response.json()["error"]["code"] == "forbidden"


async def test_a_created_key_is_shown_once_and_then_listed_without_its_secret(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post(
        "/v1/keys", json={"name": "gw-eu-1", "scope": "ingest", "tenant": None}
    )

    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "name", "scope", "tenant", "created_at", "revoked_at", "key"}
    assert (body["name"], body["scope"], body["tenant"]) == ("gw-eu-1", "ingest", None)
    assert body["key"].startswith(f"tp_{body['id']}_")
    listed = await client.get("/v1/keys")
    assert body["key"].split("_", 2)[2] not in listed.text
    assert {key["id"]: key["name"] for key in listed.json()["keys"]}[body["id"]] == "gw-eu-1"
    ingested = await client.post("/v1/events", json=event(), headers=bearer(body["key"]))
    assert ingested.status_code == 200


async def test_a_revoked_key_is_refused_and_listed_as_revoked(
    client: httpx.AsyncClient, keys: Keys
) -> None:
    token = await keys.create("read")
    key_id = token.split("_")[1]
    assert (await client.get("/v1/totals?window=1h", headers=bearer(token))).status_code == 200

    revoked = await client.delete(f"/v1/keys/{key_id}")
    again = await client.delete(f"/v1/keys/{key_id}")

    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    refused = await client.get("/v1/totals?window=1h", headers=bearer(token))
    assert refused.status_code == 401
    assert (await client.delete("/v1/keys/0000000000000000")).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scope": "superuser"}, "scope"),
        ({"name": "", "scope": "read"}, "name"),
        ({"scope": "read"}, "name"),
        ({"name": "x", "scope": "read", "tenant": ""}, "tenant"),
        ({"name": "x", "scope": "read", "colour": "red"}, "colour"),
    ],
)
async def test_a_key_request_that_breaks_a_rule_is_refused_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/keys", json=body)

    assert response.status_code == 422
    assert [problem["field"] for problem in response.json()["error"]["errors"]] == [field]


async def test_a_tenant_bound_admin_manages_only_keys_of_its_own_tenant(
    make_client: ClientFactory, keys: Keys
) -> None:
    acme_admin = await keys.create("admin", tenant="acme")
    globex_reader = (await keys.create("read", tenant="globex")).split("_")[1]
    async with make_client(token=acme_admin) as client:
        platform = await client.post("/v1/keys", json={"name": "x", "scope": "read"})
        other = await client.post(
            "/v1/keys", json={"name": "x", "scope": "read", "tenant": "globex"}
        )
        listed = await client.get("/v1/keys")
        foreign = await client.delete(f"/v1/keys/{globex_reader}")

    assert platform.status_code == 201
    assert platform.json()["tenant"] == "acme", "an unnamed tenant means the key's own"
    assert other.status_code == 403
    assert {key["tenant"] for key in listed.json()["keys"]} == {"acme"}
    assert foreign.status_code == 404


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "tp_0123456789abcdef_" + "A" * 43, "bearer x y"],
)
async def test_an_authorization_header_that_is_not_a_bearer_key_is_refused(
    make_client: ClientFactory, header: str
) -> None:
    async with make_client(token=None) as client:
        response = await client.get(
            "/v1/totals", params={"window": "1h"}, headers={"Authorization": header}
        )

    assert response.status_code == 401


async def test_a_caller_without_a_key_is_refused_before_its_body_is_read(
    make_client: ClientFactory,
) -> None:
    async with make_client(token=None) as client:
        malformed = await client.post(
            "/v1/keys", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        launch = await client.put("/v1/launches/m", content=b"x" * 200_000)

    assert (malformed.status_code, launch.status_code) == (401, 401)


async def test_a_key_or_launch_body_over_64_kib_is_refused(client: httpx.AsyncClient) -> None:
    padded = {"name": "x", "scope": "read", "pad": "p" * 70_000}

    key = await client.post("/v1/keys", json=padded)
    launch = await client.put("/v1/launches/m", json={"launched_at": "p" * 70_000})

    assert (key.status_code, launch.status_code) == (413, 413)


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data", None]
)
async def test_a_key_or_launch_body_that_is_not_json_is_unsupported(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    key = await client.post("/v1/keys", content=b'{"scope": "read"}', headers=headers)
    launch = await client.put(
        "/v1/launches/m", content=b'{"launched_at": "2026-11-27T09:00:00Z"}', headers=headers
    )
    keys = (await client.get("/v1/keys")).json()["keys"]

    assert (key.status_code, launch.status_code) == (415, 415)
    assert key.json()["error"] == {
        "code": "unsupported_media_type",
        "message": f"Content-Type must be application/json, got {content_type or 'none'}",
    }
    assert (await client.get("/v1/launches")).json() == {"launches": []}
    assert len(keys) == 1  # the admin key the test came with


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\u0000b", "scope": "read"}, "name"),
        ({"name": "x", "scope": "read", "tenant": "a\u0000b"}, "tenant"),
    ],
)
async def test_key_names_and_tenants_must_be_storable_text(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post("/v1/keys", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["errors"][0]["field"] == field


@pytest.mark.parametrize(
    "text",
    [
        "gw\n0123456789abcdef\tforged",
        "gw\teu",
        "gw\r",
        "gw\x1b[2J",
        "gw\x7f",
        "gw\x85",
        "gw\u2028eu",
    ],
    ids=["newline", "tab", "carriage return", "escape", "delete", "next line", "line separator"],
)
@pytest.mark.parametrize("field", ["name", "tenant"])
async def test_key_names_and_tenants_with_control_characters_are_refused_naming_the_field(
    client: httpx.AsyncClient, field: str, text: str
) -> None:
    response = await client.post("/v1/keys", json={"name": "x", "scope": "read", field: text})

    assert response.status_code == 422
    [problem] = response.json()["error"]["errors"]
    assert problem["field"] == field
    assert "control characters" in problem["message"]
    listed = (await client.get("/v1/keys")).json()["keys"]
    assert [key["name"] for key in listed] == ["test admin"]


async def test_no_key_is_created_by_an_admin_key_revoked_while_the_request_body_arrived(
    make_client: ClientFactory, keys: Keys, monotonic: Ticker
) -> None:
    admin = await keys.create("admin")

    async def body() -> AsyncIterator[bytes]:
        # The first part is asked for once the key has been admitted.
        yield b'{"name": "late", '
        await keys.revoke(admin)  # in the database, as from another worker or the command line
        monotonic.advance(0.3)  # past the key cache
        yield b'"scope": "admin"}'

    async with make_client(token=admin, key_cache_seconds=0.2) as client:
        refused = await client.post(
            "/v1/keys", content=body(), headers={"Content-Type": "application/json"}
        )
        listed = await client.get("/v1/keys", headers=bearer(keys.admin))

    assert refused.status_code == 401
    assert "late" not in [key["name"] for key in listed.json()["keys"]]


async def test_revoking_a_key_id_that_cannot_exist_is_not_found(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/v1/keys/not%00a-key")).status_code == 404
