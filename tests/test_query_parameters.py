"""One set of rules at the edges: the query string of every read, key and launch route names
only parameters the route takes, a single-valued one once, and every refusal, of a parameter or
of a key or launch body, speaks in the words events are refused with, never in pydantic's."""

from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory, Keys

READS = {
    "GET /v1/usage": "/v1/usage?start=2026-11-27T00:00:00Z&bucket=1h",
    "GET /v1/totals": "/v1/totals?window=1h",
    "GET /v1/milestones": "/v1/milestones?threshold=1&since=2026-11-27T00:00:00Z",
    "GET /v1/launches": "/v1/launches",
    "GET /v1/launches/{model}": "/v1/launches/m-large",
    "GET /v1/keys": "/v1/keys",
}
"""A request each read endpoint answers 200, to which a test adds what it refuses."""

PYDANTIC_PHRASES = (
    "Field required",
    "Input should be",
    "Extra inputs are not permitted",
    "value is not a valid",
    "String should",
    "Value error",
)


async def launched(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/launches/m-large", json={"launched_at": "2026-11-27T09:00:00Z"}
    )
    assert response.status_code == 201, response.text


def problems(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"]["code"] == "invalid_parameters"
    errors: list[dict[str, Any]] = body["error"]["errors"]
    return errors


@pytest.mark.parametrize("endpoint", READS, ids=list(READS))
async def test_every_read_refuses_a_parameter_it_does_not_take_and_names_it(
    client: httpx.AsyncClient, endpoint: str
) -> None:
    await launched(client)
    url = READS[endpoint]
    joiner = "&" if "?" in url else "?"

    valid = await client.get(url)
    misspelt = await client.get(f"{url}{joiner}windw=1h")

    assert valid.status_code == 200, valid.text
    [problem] = problems(misspelt)
    assert problem["field"] == "windw"
    assert problem["message"].startswith("is not a parameter of this endpoint, which takes ")


async def test_an_unknown_parameter_is_named_instead_of_the_one_it_was_meant_for(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/totals?windw=1h")

    assert problems(response) == [
        {
            "field": "windw",
            "message": "is not a parameter of this endpoint, which takes start, end, window, "
            "group_by, tenant, project, model, api_key_id",
        }
    ]


@pytest.mark.parametrize(
    ("url", "repeated"),
    [
        ("/v1/totals?window=1h&group_by=model&group_by=tenant", "group_by"),
        ("/v1/totals?window=1h&window=24h", "window"),
        ("/v1/usage?start=2026-11-27T00:00:00Z&start=2026-11-27T00:00:00Z", "start"),
        ("/v1/usage?start=2026-11-27T00:00:00Z&bucket=1h&bucket=1d&bucket=1m", "bucket"),
        ("/v1/milestones?threshold=1&since=2026-11-27T00:00:00Z&threshold=2", "threshold"),
    ],
)
async def test_a_single_valued_parameter_given_twice_is_refused_instead_of_the_last_winning(
    client: httpx.AsyncClient, url: str, repeated: str
) -> None:
    given = url.count(f"{repeated}=")

    assert problems(await client.get(url)) == [
        {"field": repeated, "message": f"takes one value, got {given}"}
    ]


async def test_a_query_string_of_many_unknown_names_is_answered_with_the_first_twenty(
    client: httpx.AsyncClient,
) -> None:
    query = "&".join(f"p{n}=" for n in range(100))

    listed = problems(await client.get(f"/v1/totals?window=1h&{query}"))

    assert [p["field"] for p in listed[:20]] == [f"p{n}" for n in range(20)]
    assert listed[20:] == [{"field": None, "message": "and 80 more errors"}]


async def test_a_filter_may_repeat_to_allow_several_values(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/totals?window=1h&model=a&model=b&tenant=acme&tenant=acme")

    assert response.status_code == 200, response.text


async def test_a_dimension_named_twice_in_group_by_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/totals?window=1h&group_by=model,tenant,model")

    assert problems(response) == [
        {"field": "group_by", "message": "'model' is named more than once"}
    ]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("PUT", "/v1/launches/m-large?at=now"),
        ("DELETE", "/v1/launches/m-large?force=1"),
        ("POST", "/v1/keys?scope=read"),
    ],
)
async def test_a_route_that_takes_no_parameters_refuses_any(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    await launched(client)
    body = {"PUT": {"launched_at": "2026-11-27T10:00:00Z"}, "POST": {"name": "x", "scope": "read"}}

    response = await client.request(method, url, json=body.get(method))

    [problem] = problems(response)
    assert problem["message"] == "is not a parameter of this endpoint, which takes none"
    assert (await client.get("/v1/launches")).json()["launches"] == [
        {"model": "m-large", "launched_at": "2026-11-27T09:00:00Z"}
    ]
    assert len((await client.get("/v1/keys")).json()["keys"]) == 1, "no key was created"


async def test_the_names_in_a_query_string_are_checked_before_the_key(
    make_client: ClientFactory,
) -> None:
    async with make_client(token=None) as client:
        misspelt = await client.get("/v1/totals?windw=1h")
        refused = await client.get("/v1/totals?window=1h")

    assert problems(misspelt)[0]["field"] == "windw"
    assert refused.status_code == 401


FILTERS = {"tenant": True, "project": True, "model": True, "api_key_id": True}
TAKEN = {
    "GET /v1/usage": {
        "start": False,
        "end": False,
        "bucket": False,
        "tz": False,
        "group_by": False,
        **FILTERS,
    },
    "GET /v1/totals": {"start": False, "end": False, "window": False, "group_by": False, **FILTERS},
    "GET /v1/milestones": {"threshold": False, "since": False, "metric": False, **FILTERS},
    "GET /v1/launches": {},
    "GET /v1/launches/{model}": {},
    "PUT /v1/launches/{model}": {},
    "DELETE /v1/launches/{model}": {},
    "GET /v1/keys": {},
    "POST /v1/keys": {},
    "DELETE /v1/keys/{key_id}": {},
}
"""The query parameters each strictly checked route takes, and whether each may repeat."""


async def test_openapi_lists_exactly_the_parameters_each_route_takes(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()
    listed = {
        f"{method.upper()} {path}": {
            parameter["name"]: _is_array(parameter["schema"])
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "query"
        }
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }

    assert {endpoint: listed.get(endpoint) for endpoint in TAKEN} == TAKEN


def _is_array(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(option.get("type") == "array" for option in options)


REFUSED_PARAMETERS = [
    ("/v1/usage", "start", "is required"),
    (
        "/v1/usage?start=2026-11-27T00:00:00Z&bucket=2h",
        "bucket",
        "must be one of '1m', '1h', '1d', got '2h'",
    ),
    ("/v1/totals?window=2h", "window", "must be one of '5m', '1h', '24h', '7d', '30d', got '2h'"),
    ("/v1/milestones?since=2026-11-27T00:00:00Z", "threshold", "is required"),
    (
        "/v1/milestones?threshold=abc&since=2026-11-27T00:00:00Z",
        "threshold",
        "must be an integer, got 'abc'",
    ),
    (
        "/v1/milestones?threshold=0&since=2026-11-27T00:00:00Z",
        "threshold",
        "must be at least 1, got 0",
    ),
    (
        "/v1/milestones?threshold=9223372036854775808&since=2026-11-27T00:00:00Z",
        "threshold",
        "must be at most 9,223,372,036,854,775,807, got 9223372036854775808",
    ),
    (
        "/v1/milestones?threshold=1&since=2026-11-27T00:00:00Z&metric=spend",
        "metric",
        "must be one of ",
    ),
    (
        "/v1/milestones?threshold=1e6&since=2026-11-27T00:00:00Z&metric=cost",
        "threshold",
        'must be an amount such as "1000000" or "0.50" for metric=cost (digits, an optional '
        "point, at most 18 digits before it and 18 after), got '1e6'",
    ),
    (
        "/v1/milestones?threshold=0.000&since=2026-11-27T00:00:00Z&metric=cost",
        "threshold",
        "must be more than 0, got 0.000",
    ),
    (
        "/v1/milestones?threshold=2.5&since=2026-11-27T00:00:00Z",
        "threshold",
        "must be an integer, got '2.5'",
    ),
    ("/v1/launches/" + "m" * 129, "model", "must be at most 128 characters, got 129"),
]


@pytest.mark.parametrize(
    ("url", "field", "message"), REFUSED_PARAMETERS, ids=[f for _, f, _ in REFUSED_PARAMETERS]
)
async def test_a_refused_query_or_path_parameter_is_named_in_the_house_words(
    client: httpx.AsyncClient, url: str, field: str, message: str
) -> None:
    response = await client.get(url)

    [problem] = problems(response)
    assert problem["field"] == field
    assert problem["message"].startswith(message)
    assert not any(phrase in response.text for phrase in PYDANTIC_PHRASES)


REFUSED_KEYS = [
    ({}, [("name", "is required"), ("scope", "is required")]),
    ([], [(None, "the body must be a JSON object, got an array")]),
    (
        {"name": "", "scope": "owner", "tenant": 5, "team": "x"},
        [
            ("name", "must not be empty"),
            ("scope", "must be one of 'ingest', 'read', 'admin', got 'owner'"),
            ("tenant", "must be a string, got an integer"),
            ("team", "is not a known field"),
        ],
    ),
    (
        {"name": None, "scope": 1, "tenant": "a\x00b"},
        [
            ("name", "must be a string, got null"),
            ("scope", "must be one of 'ingest', 'read', 'admin', got an integer"),
            ("tenant", "must not contain NUL characters"),
        ],
    ),
    ({"name": "n" * 129, "scope": "read"}, [("name", "must be at most 128 characters, got 129")]),
]


@pytest.mark.parametrize(("body", "expected"), REFUSED_KEYS)
async def test_a_refused_key_body_is_named_in_the_house_words(
    client: httpx.AsyncClient, body: object, expected: list[tuple[str | None, str]]
) -> None:
    response = await client.post("/v1/keys", json=body)

    assert [(p["field"], p["message"]) for p in problems(response)] == expected
    assert not any(phrase in response.text for phrase in PYDANTIC_PHRASES)


REFUSED_LAUNCHES = [
    ({}, [("launched_at", "is required")]),
    ("2026-11-27T09:00:00Z", [(None, "the body must be a JSON object, got a string")]),
    (
        {"launched_at": None, "by": "me"},
        [("launched_at", "must be a string, got null"), ("by", "is not a known field")],
    ),
    ({"launched_at": 1764234000}, [("launched_at", "must be a string, got an integer")]),
]


@pytest.mark.parametrize(("body", "expected"), REFUSED_LAUNCHES)
async def test_a_refused_launch_body_is_named_in_the_house_words(
    client: httpx.AsyncClient, body: object, expected: list[tuple[str | None, str]]
) -> None:
    response = await client.put("/v1/launches/m-large", json=body)

    assert [(p["field"], p["message"]) for p in problems(response)] == expected
    assert not any(phrase in response.text for phrase in PYDANTIC_PHRASES)


@pytest.mark.parametrize(
    ("method", "url", "valid"),
    [
        ("POST", "/v1/keys", {"name": "x", "scope": "read"}),
        ("PUT", "/v1/launches/m-large", {"launched_at": "2026-11-27T09:00:00Z"}),
    ],
)
async def test_a_body_of_very_many_unknown_fields_is_answered_with_the_first_twenty(
    client: httpx.AsyncClient, method: str, url: str, valid: dict[str, str]
) -> None:
    body = valid | {f"f{n}": 0 for n in range(1000)}

    response = await client.request(method, url, json=body)

    listed = problems(response)
    assert listed[:20] == [{"field": f"f{n}", "message": "is not a known field"} for n in range(20)]
    assert listed[20:] == [{"field": None, "message": "and 980 more errors"}]
    assert response.json()["error"]["message"].count(";") == 20


async def test_a_body_key_that_is_not_valid_unicode_is_refused_in_the_house_words(
    client: httpx.AsyncClient,
) -> None:
    body = b'{"name": "x", "scope": "read", "\\ud800": 1}'

    response = await client.post(
        "/v1/keys", content=body, headers={"Content-Type": "application/json"}
    )

    assert problems(response) == [
        {"field": None, "message": "must be valid Unicode (it holds a lone surrogate)"}
    ]


async def test_a_tenant_bound_key_gets_the_same_words(
    make_client: ClientFactory, keys: Keys
) -> None:
    async with make_client(token=await keys.create("read", tenant="acme")) as client:
        response = await client.get("/v1/totals?window=2h&grup_by=model")

    assert [p["field"] for p in problems(response)] == ["grup_by"]
