"""Prices: versions of a model's prices per million tokens, set, replaced, withdrawn and listed."""

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ClientFactory, Keys, scratch_database
from tests.test_cli import run_cli
from tokenpulse.prices.files import read_price_file

PRICES = {
    "input": "2.50",
    "cached_input": "0.25",
    "cache_write_input": "3.125",
    "output": "10.00",
    "reasoning": "12",
}


def version(effective_from: str, **prices: str) -> dict[str, Any]:
    return {"effective_from": effective_from, "per_million_tokens": prices or PRICES}


def without_times(answer: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answer.items() if key not in ("id", "created_at")}


async def test_a_version_is_created_listed_and_putting_it_again_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    created = await client.put("/v1/prices/gpt-5.2", json=version("2026-11-27T00:00:00Z"))
    again = await client.put("/v1/prices/gpt-5.2", json=version("2026-11-27T01:00:00+01:00"))
    listed = await client.get("/v1/prices")

    assert created.status_code == 201, created.text
    assert without_times(created.json()) == {
        "model": "gpt-5.2",
        "effective_from": "2026-11-27T00:00:00Z",
        "currency": "usd",
        "per_million_tokens": {
            "input": "2.5",
            "cached_input": "0.25",
            "cache_write_input": "3.125",
            "output": "10",
            "reasoning": "12",
        },
        "ended_at": None,
        "outcome": "created",
        "replaced": None,
    }
    assert again.status_code == 200
    assert again.json()["outcome"] == "unchanged"
    assert again.json()["id"] == created.json()["id"]
    assert listed.json()["currency"] == "usd"
    [listed_version] = listed.json()["prices"]
    assert listed_version == {
        key: value for key, value in created.json().items() if key not in ("outcome", "replaced")
    }


async def test_parts_left_out_cost_what_input_and_output_cost(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/prices/m", json=version("2026-11-27T00:00:00Z", input="1", output="4")
    )

    assert response.status_code == 201
    assert response.json()["per_million_tokens"] == {
        "input": "1",
        "cached_input": "1",
        "cache_write_input": "1",
        "output": "4",
        "reasoning": None,
    }


async def test_other_prices_from_the_same_minute_are_a_conflict_unless_replacing(
    client: httpx.AsyncClient,
) -> None:
    first = await client.put("/v1/prices/m", json=version("2026-11-27T00:00:00Z"))
    cheaper = version("2026-11-27T00:00:00Z", input="1", output="2")
    refused = await client.put("/v1/prices/m", json=cheaper)
    replaced = await client.put("/v1/prices/m", params={"replace": "true"}, json=cheaper)
    current = await client.get("/v1/prices")
    everything = await client.get("/v1/prices", params={"ended": "true"})

    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        f"version {first.json()['id']} of this model's prices is in effect from "
        "2026-11-27T00:00:00Z with other prices; send replace=true to replace it"
    )
    assert replaced.status_code == 200
    assert replaced.json()["outcome"] == "replaced"
    assert replaced.json()["replaced"]["id"] == first.json()["id"]
    assert replaced.json()["replaced"]["ended_at"] is not None
    assert [v["id"] for v in current.json()["prices"]] == [replaced.json()["id"]]
    assert [(v["id"], v["ended_at"] is None) for v in everything.json()["prices"]] == [
        (first.json()["id"], False),
        (replaced.json()["id"], True),
    ]


async def test_a_withdrawn_version_stays_listed_as_ended(client: httpx.AsyncClient) -> None:
    await client.put("/v1/prices/m", json=version("2026-11-27T00:00:00Z"))
    later = await client.put("/v1/prices/m", json=version("2026-11-28T00:00:00Z"))
    withdrawn = await client.delete(
        "/v1/prices/m", params={"effective_from": "2026-11-28T00:00:00Z"}
    )
    again = await client.delete("/v1/prices/m", params={"effective_from": "2026-11-28T00:00:00Z"})
    listed = await client.get("/v1/prices", params={"model": "m"})

    assert withdrawn.status_code == 200
    assert withdrawn.json()["id"] == later.json()["id"]
    assert withdrawn.json()["ended_at"] is not None
    assert again.status_code == 404
    assert [v["effective_from"] for v in listed.json()["prices"]] == ["2026-11-27T00:00:00Z"]


async def test_versions_are_listed_by_model_in_code_point_order_then_by_minute(
    client: httpx.AsyncClient,
) -> None:
    for model, start in [
        ("b", "2026-11-28T00:00:00Z"),
        ("a/x", "2026-11-27T00:00:00Z"),
        ("b", "2026-11-27T00:00:00Z"),
        ("B", "2026-11-29T00:00:00Z"),
    ]:
        response = await client.put(f"/v1/prices/{model}", json=version(start))
        assert response.status_code == 201, response.text

    listed = await client.get("/v1/prices")
    only_b = await client.get("/v1/prices", params={"model": "b"})

    assert [(v["model"], v["effective_from"][:10]) for v in listed.json()["prices"]] == [
        ("B", "2026-11-29"),
        ("a/x", "2026-11-27"),
        ("b", "2026-11-27"),
        ("b", "2026-11-28"),
    ]
    assert len(only_b.json()["prices"]) == 2


async def test_each_part_must_be_a_plain_non_negative_decimal_string(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put(
        "/v1/prices/m",
        json={
            "effective_from": "2026-11-27T00:00:00Z",
            "per_million_tokens": {
                "input": "-1",
                "cached_input": "1e3",
                "cache_write_input": 3,
                "output": "1.0000000000001",
                "reasoning": "2\n",
            },
        },
    )

    assert response.status_code == 422
    errors = {error["field"]: error["message"] for error in response.json()["error"]["errors"]}
    assert set(errors) == {
        "per_million_tokens.input",
        "per_million_tokens.cached_input",
        "per_million_tokens.cache_write_input",
        "per_million_tokens.output",
        "per_million_tokens.reasoning",
    }
    assert errors["per_million_tokens.input"] == (
        'must be a decimal string such as "2.50" (digits, an optional point, at most 12 '
        "digits on each side; no sign or exponent), got '-1'"
    )


async def test_a_version_starts_at_a_whole_minute_and_names_only_known_fields(
    client: httpx.AsyncClient,
) -> None:
    seconds = await client.put("/v1/prices/m", json=version("2026-11-27T00:00:30Z"))
    naive = await client.put("/v1/prices/m", json=version("2026-11-27T00:00:00"))
    unknown = await client.put(
        "/v1/prices/m",
        json={**version("2026-11-27T00:00:00Z"), "currency": "eur"},
    )
    unknown_part = await client.put(
        "/v1/prices/m",
        json=version("2026-11-27T00:00:00Z", input="1", output="1", audio="1"),
    )
    missing = await client.put("/v1/prices/m", json=version("2026-11-27T00:00:00Z", input="1"))

    assert seconds.status_code == 422
    assert seconds.json()["error"]["errors"] == [
        {
            "field": "effective_from",
            "message": "must be a whole minute (seconds and fractions 0): a price applies "
            "from a minute",
        }
    ]
    assert naive.status_code == 422
    assert [e["field"] for e in naive.json()["error"]["errors"]] == ["effective_from"]
    assert [e["field"] for e in unknown.json()["error"]["errors"]] == ["currency"]
    assert [e["field"] for e in unknown_part.json()["error"]["errors"]] == [
        "per_million_tokens.audio"
    ]
    assert missing.json()["error"]["errors"] == [
        {"field": "per_million_tokens.output", "message": "is required"}
    ]


async def test_only_a_platform_admin_changes_prices_and_any_reader_lists_them(
    make_client: ClientFactory, keys: Keys
) -> None:
    body = version("2026-11-27T00:00:00Z")
    async with make_client(token=await keys.create("admin", tenant="acme")) as client:
        bound_put = await client.put("/v1/prices/m", json=body)
        bound_delete = await client.delete(
            "/v1/prices/m", params={"effective_from": "2026-11-27T00:00:00Z"}
        )
    async with make_client(token=await keys.create("read", tenant="acme")) as client:
        reader_put = await client.put("/v1/prices/m", json=body)
        reader_list = await client.get("/v1/prices")
    async with make_client(token=None) as client:
        anonymous = await client.get("/v1/prices")

    assert (bound_put.status_code, bound_delete.status_code) == (403, 403)
    assert reader_put.status_code == 403
    assert reader_list.status_code == 200
    assert anonymous.status_code == 401


async def test_the_currency_is_the_deployments(make_client: ClientFactory) -> None:
    async with make_client(currency="eur") as client:
        response = await client.put("/v1/prices/m", json=version("2026-11-27T00:00:00Z"))

    assert response.json()["currency"] == "eur"


LITELLM_PRICES = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
"""The price file the litellm package ships: LiteLLM's own format, as `import` reads it."""


def test_litellms_price_file_reads_as_per_million_prices_exactly() -> None:
    entries, skipped = read_price_file(LITELLM_PRICES.read_text(), "litellm")

    by_model = {entry.model: entry.prices for entry in entries}

    def spec_of(model: str) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(LITELLM_PRICES.read_text(), parse_float=Decimal)[model]
        return found

    spec = spec_of("claude-sonnet-4-5")
    sonnet = by_model["claude-sonnet-4-5"]
    assert sonnet.input == spec["input_cost_per_token"] * 10**6
    assert sonnet.cached_input == spec["cache_read_input_token_cost"] * 10**6
    assert sonnet.cache_write_input == spec["cache_creation_input_token_cost"] * 10**6
    assert sonnet.output == spec["output_cost_per_token"] * 10**6
    # A float written out with its binary error: a price per million to 12 places.
    assert spec_of("databricks/databricks-claude-sonnet-4-1")["input_cost_per_token"] == Decimal(
        "0.0000029999900000000002"
    )
    assert by_model["databricks/databricks-claude-sonnet-4-1"].input == Decimal("2.99999")
    # A model with no cache-write price: cache writes cost what input does.
    gpt = by_model["gpt-4o"]
    assert gpt.cache_write_input == gpt.input
    assert "sample_spec" not in by_model
    skipped_models = {s.where for s in skipped}
    assert "aiml/dall-e-3" in skipped_models, "priced per image, not per token"
    assert not skipped_models & set(by_model)


def test_a_csv_price_file_names_each_line_it_cannot_read() -> None:
    entries, skipped = read_price_file(
        "model,input,output,reasoning,effective_from\n"
        "m1,1,2,,\n"
        "m2,1,,3,2026-11-02T00:00:00Z\n"
        "m3,0.5,1.5,2,2026-11-02T00:00:00+01:00\n",
        "csv",
    )

    assert [(e.model, e.prices.reasoning, e.effective_from) for e in entries] == [
        ("m1", None, None),
        ("m3", Decimal("2"), datetime(2026, 11, 1, 23, tzinfo=UTC)),
    ]
    assert [(s.where, s.reason) for s in skipped] == [("line 3", "output is required")]
    with pytest.raises(ValueError, match="missing: output"):
        read_price_file("model,input,price\n", "csv")


@pytest.mark.process
async def test_the_prices_commands_set_import_and_list_versions(
    server_url: str, tmp_path: Path
) -> None:
    csv_file = tmp_path / "prices.csv"
    csv_file.write_text("model,input,cached_input,output\ngpt-5.2,3,0.3,12\n")
    async with scratch_database(server_url) as url:
        env = {"TOKENPULSE_DATABASE_URL": url}
        put = run_cli(
            "prices", "set", "gpt-5.2", "--from", "2026-11-27T00:00:00Z",
            "--input", "2.50", "--cached-input", "0.25", "--output", "10", env=env,
        )  # fmt: skip
        imported = run_cli(
            "prices", "import", str(LITELLM_PRICES), "--from", "2026-11-01T00:00:00Z",
            "--model", "claude-sonnet-4-5", "--model", "gpt-4o", env=env,
        )  # fmt: skip
        conflict = run_cli(
            "prices", "import", str(csv_file), "--from", "2026-11-27T00:00:00Z", env=env
        )
        replaced = run_cli(
            "prices", "import", str(csv_file), "--from", "2026-11-27T00:00:00Z", "--replace",
            env=env,
        )  # fmt: skip
        refused = run_cli(
            "prices", "set", "m", "--from", "2026-11-27T00:00:30Z", "--input", "1",
            "--output", "1", env=env,
        )  # fmt: skip
        listed = run_cli("prices", "list", env=env)

    assert put.returncode == 0, put.stderr
    assert put.stderr.startswith("created version ")
    assert imported.returncode == 0, imported.stderr
    assert imported.stderr == "2 created, 0 unchanged, 0 replaced, 0 skipped\n"
    assert conflict.returncode == 2
    assert "nothing was imported; add --replace" in conflict.stderr
    assert replaced.stderr == "0 created, 0 unchanged, 1 replaced, 0 skipped\n"
    assert refused.returncode == 2
    assert refused.stderr == (
        "tokenpulse: --from must be a whole minute (seconds and fractions 0): a price applies "
        "from a minute\n"
    )
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header[:8] == [
        "id", "model", "effective_from", "input", "cached_input", "cache_write_input",
        "output", "reasoning",
    ]  # fmt: skip
    assert [row[1:8] for row in rows] == [
        ["claude-sonnet-4-5", "2026-11-01T00:00:00Z", "3", "0.3", "3.75", "15", "-"],
        ["gpt-4o", "2026-11-01T00:00:00Z", "2.5", "1.25", "2.5", "10", "-"],
        ["gpt-5.2", "2026-11-27T00:00:00Z", "3", "0.3", "3", "12", "-"],
    ]


async def test_the_database_itself_refuses_a_version_that_starts_inside_a_minute(
    db: AsyncEngine,
) -> None:
    statement = (
        "INSERT INTO price_version (model, effective_from, input, cached_input, "
        "cache_write_input, output) VALUES ('m', '2026-11-27T00:00:30Z', 1, 1, 1, 1)"
    )
    with pytest.raises(IntegrityError, match="ck_price_version_whole_minute"):
        async with db.begin() as connection:
            await connection.exec_driver_sql(statement)


async def test_changing_prices_leaves_the_planner_statistics_of_the_versions_in_effect(
    client: httpx.AsyncClient, db: AsyncEngine
) -> None:
    async def counted_versions() -> float:
        async with db.connect() as connection:
            rows = await connection.exec_driver_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'price_version'"
            )
            return float(rows.scalar_one())

    for model in ("a", "b", "c"):
        response = await client.put(f"/v1/prices/{model}", json=version("2026-11-27T00:00:00Z"))
        assert response.status_code == 201
    after_puts = await counted_versions()
    withdrawn = await client.delete(
        "/v1/prices/c", params={"effective_from": "2026-11-27T00:00:00Z"}
    )
    assert withdrawn.status_code == 200
    # A withdrawn version stays, ended: the statistics count every row.
    after_withdrawing = await counted_versions()

    assert after_puts == 3
    assert after_withdrawing == 3
