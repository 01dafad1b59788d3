"""LiteLLM's own callbacks sending to tokenpulse: its generic API logger to
`/v1/integrations/litellm` in each of its log formats, and its OpenTelemetry callback to
`/v1/traces`; what each payload counts as, and the reasons a payload is rejected for, named in
its own fields."""

import asyncio
import copy
import gzip
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import openai
import pytest
from pydantic import ValidationError
from sqlalchemy import String, Text, cast, func, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import NOW, UNLIMITED_ENV, ClientFactory, Keys, bearer
from tests.servers import Server, running_server
from tokenpulse.settings import Settings
from tokenpulse.tables import metadata

# LiteLLM fetches its model price map from the network at import unless told to use the copy
# it ships: the tests never leave the machine.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm
from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger
from litellm.integrations.opentelemetry import OpenTelemetry, OpenTelemetryConfig
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
from litellm.litellm_core_utils.safe_json_dumps import safe_dumps
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

T = TypeVar("T")

pytestmark = pytest.mark.filterwarnings(
    # LiteLLM's own types mark TypedDict items ReadOnly, which pydantic warns about each time it
    # first builds a schema of one: nothing tokenpulse does, and nothing a test can change.
    "ignore:Items? .* using the `ReadOnly` qualifier:UserWarning:pydantic"
)

MARKER = "PROMPT-MARKER-7f3a"
"""Put in every prompt and completion: it must reach neither the database nor the log."""
TEAM = "team-acme"
PROJECT = "proj-search"
KEY_HASH = "5f0c" * 16
"""What LiteLLM's proxy puts in `user_api_key_hash`: the SHA-256 of a virtual key."""
EVERYTHING = {"start": "2026-01-01T00:00:00Z", "end": "2027-06-01T00:00:00Z"}
FORMATS = ("json_array", "ndjson", "single")


def in_a_loop_of_its_own(scenario: Callable[[], Awaitable[T]]) -> T:
    """`scenario` run to its end on an event loop of its own thread, as a gateway runs LiteLLM:
    every task LiteLLM leaves behind (its loggers flush on a timer for ever) ends with it."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, scenario()).result()  # type: ignore[arg-type]


def reply(text: str, **usage: Any) -> litellm.ModelResponse:
    """A provider's answer, as LiteLLM's `mock_response` returns it instead of calling one."""
    return litellm.ModelResponse(
        choices=[{"message": {"role": "assistant", "content": text}}], usage=usage
    )


def attributed(team: str | None = TEAM) -> dict[str, Any]:
    """What LiteLLM's proxy puts in a call's metadata about the virtual key that made it."""
    return {
        "user_api_key_team_id": team,
        "user_api_key_project_id": PROJECT,
        "user_api_key_hash": KEY_HASH,
        "user_api_key_alias": "search-backend",
    }


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{MARKER} {text}"}]


def calls() -> list[dict[str, Any]]:
    """Calls of each kind LiteLLM logs, made anew each time: a reply keeps its id."""
    return [
        # LiteLLM counts the prompt's tokens itself for a text reply: no cache, no reasoning.
        {"model": "gpt-4o", "messages": prompt("hello"), "mock_response": f"{MARKER} hi"},
        # Anthropic's prompt caching, as LiteLLM normalises it: reads and writes within the prompt.
        {
            "model": "anthropic/claude-sonnet-4-5",
            "messages": prompt("summarise the contract"),
            "mock_response": reply(
                f"{MARKER} a summary",
                prompt_tokens=12_000,
                completion_tokens=900,
                total_tokens=12_900,
                cache_read_input_tokens=8_000,
                cache_creation_input_tokens=3_500,
            ),
        },
        # OpenAI's cached prompt and reasoning tokens.
        {
            "model": "gpt-5-mini",
            "messages": prompt("think it through"),
            "mock_response": reply(
                f"{MARKER} an answer",
                prompt_tokens=2_048,
                completion_tokens=1_500,
                total_tokens=3_548,
                prompt_tokens_details={"cached_tokens": 1_024},
                completion_tokens_details={"reasoning_tokens": 1_200},
            ),
        },
        # The provider refuses the call: no model processed it.
        {"model": "gpt-4o", "messages": prompt("again"), "mock_response": Exception("overloaded")},
    ]


SUCCESSES = 3


async def call(arguments: dict[str, Any], metadata: dict[str, Any]) -> litellm.Usage | None:
    """One call through LiteLLM: the usage it reports, or None when the call failed."""
    try:
        response = await litellm.acompletion(**arguments, metadata=metadata)
    except openai.APIError:
        return None
    usage: litellm.Usage = response.usage
    return usage


class Gateway:
    """LiteLLM with its generic API logger as a gateway configures it, and what tokenpulse
    answered each request the logger sent."""

    def __init__(self, url: str, key: str, log_format: str) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.http = AsyncHTTPHandler(event_hooks={"response": [self._answered]})
        # Sent when the test says, never on LiteLLM's own timer or batch size.
        self.logger = GenericAPILogger(
            endpoint=f"{url}/v1/integrations/litellm",
            headers=bearer(key),
            log_format=log_format,  # type: ignore[arg-type]
            async_httpx_client=self.http,
            batch_size=1000,
            flush_interval=3600,
        )
        self.logged: list[Any] = []

    async def _answered(self, response: httpx.Response) -> None:
        await response.aread()
        self.answers.append((response.status_code, response.json()))

    async def make(
        self, calls: list[dict[str, Any]], metadata: dict[str, Any]
    ) -> list[litellm.Usage | None]:
        """Make `calls`: the usage LiteLLM reports of each; what it logged waits to be sent."""
        litellm.callbacks = [self.logger]
        try:
            reported = [await call(arguments, metadata) for arguments in calls]
            # Callbacks run on LiteLLM's logging worker: once it is idle, every payload of
            # these calls is in the logger's queue.
            await GLOBAL_LOGGING_WORKER.flush()
        finally:
            # LiteLLM keeps its callbacks in lists of its own too, and takes no second logger
            # configured as one it has: this one must leave them all for the next to be used.
            litellm.logging_callback_manager.remove_callback_from_all_lists(self.logger)
        self.logged = list(self.logger.log_queue)
        return reported

    def payloads(self) -> list[dict[str, Any]]:
        """What the logger sends, as JSON decodes it."""
        return [json.loads(safe_dumps(payload)) for payload in self.logged]

    async def send(self) -> None:
        """Send what is logged; once more if it was sent already, as the logger retries."""
        if not self.logger.log_queue:
            self.logger.log_queue.extend(self.logged)
        await self.logger.flush_queue()

    async def close(self) -> None:
        self.logger.log_queue.clear()
        await self.http.client.aclose()


def logged_payloads(calls: list[dict[str, Any]], metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """The payloads LiteLLM's generic API logger sends for `calls`, as JSON decodes them."""

    async def scenario() -> list[dict[str, Any]]:
        gateway = Gateway("http://127.0.0.1:9", "unsent", "json_array")
        await gateway.make(calls, metadata)
        await gateway.close()
        return gateway.payloads()

    return in_a_loop_of_its_own(scenario)


def reported_measures(usages: list[litellm.Usage]) -> dict[str, int]:
    """The sums of what LiteLLM reported, as tokenpulse's measures."""
    prompts = [usage.prompt_tokens_details for usage in usages]
    completions = [usage.completion_tokens_details for usage in usages]
    sums = {
        "input_tokens": sum(usage.prompt_tokens for usage in usages),
        "cached_input_tokens": sum(getattr(d, "cached_tokens", None) or 0 for d in prompts),
        "cache_write_input_tokens": sum(
            getattr(d, "cache_write_tokens", None) or 0 for d in prompts
        ),
        "output_tokens": sum(usage.completion_tokens for usage in usages),
        "reasoning_tokens": sum(getattr(d, "reasoning_tokens", None) or 0 for d in completions),
    }
    return {
        "requests": len(usages),
        **sums,
        "total_tokens": sums["input_tokens"] + sums["output_tokens"],
    }


MEASURES = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)


def measured(results: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """Each result's group keys and measures."""
    return [{name: result[name] for name in (*keys, *MEASURES)} for result in results]


# Payloads LiteLLM really logs, changed by hand where a test says so.

JSON = "application/json"
NDJSON = "application/x-ndjson"
ENDED = (NOW - timedelta(minutes=1)).timestamp() + 0.123456
"""When the payloads' calls ended (their `endTime`), a minute before the tests' now."""


@pytest.fixture(scope="module")
def logged() -> dict[str, dict[str, Any]]:
    """The payloads of `calls()`, by kind, as LiteLLM's generic API logger sends them."""
    kinds = {
        ("success", "gpt-4o"): "text",
        ("success", "claude-sonnet-4-5"): "cache",
        ("success", "gpt-5-mini"): "reasoning",
        ("failure", "gpt-4o"): "failure",
    }
    # LiteLLM's logging worker runs callbacks concurrently: they are queued in no set order.
    payloads = logged_payloads(calls(), attributed())
    by_kind = {kinds[payload["status"], payload["model"]]: payload for payload in payloads}
    assert len(by_kind) == len(payloads) == len(kinds)
    return by_kind


def payload(base: dict[str, Any], changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `base` that ended at ENDED, with each dotted path of `changes` set to its
    value (`...`: removed)."""
    changed = copy.deepcopy(base)
    changed["endTime"] = ENDED
    for path, value in (changes or {}).items():
        *outer, name = path.split(".")
        target = changed
        for key in outer:
            target = target[key]
        if value is ...:
            del target[name]
        else:
            target[name] = value
    return changed


async def post(
    client: httpx.AsyncClient, content: bytes | str, content_type: str = JSON, **headers: str
) -> httpx.Response:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return await client.post(
        "/v1/integrations/litellm",
        content=content,
        headers={"content-type": content_type, **sent},
    )


def array(*payloads: object) -> str:
    return safe_dumps(list(payloads))


async def totals(client: httpx.AsyncClient, group_by: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/totals", params={**EVERYTHING, "group_by": group_by})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


ANSWERED_ALL = {"accepted": 3, "duplicates": 0, "rejected": 0, "errors": []}
ANSWERED_ONE = {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}


async def test_each_payload_is_stored_as_the_event_it_reports(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    text, cache, reasoning = (payload(logged[kind]) for kind in ("text", "cache", "reasoning"))

    answer = await post(client, array(text, cache, reasoning))
    got = await totals(client, "tenant,project,api_key_id,model")
    crossing = await client.get(
        "/v1/milestones", params={"threshold": 1, "since": "2026-11-27T00:00:00Z"}
    )

    assert (answer.status_code, answer.json()) == (200, ANSWERED_ALL)
    group = {"tenant": TEAM, "project": PROJECT, "api_key_id": KEY_HASH}
    assert measured(got, *group, "model") == [
        {
            **group,
            "model": "claude-sonnet-4-5",
            "requests": 1,
            "input_tokens": 12_000,
            "cached_input_tokens": 8_000,
            "cache_write_input_tokens": 3_500,
            "output_tokens": 900,
            "reasoning_tokens": 0,
            "total_tokens": 12_900,
        },
        {
            **group,
            "model": "gpt-4o",
            "requests": 1,
            "input_tokens": text["prompt_tokens"],
            "cached_input_tokens": 0,
            "cache_write_input_tokens": 0,
            "output_tokens": text["completion_tokens"],
            "reasoning_tokens": 0,
            "total_tokens": text["prompt_tokens"] + text["completion_tokens"],
        },
        {
            **group,
            "model": "gpt-5-mini",
            "requests": 1,
            "input_tokens": 2_048,
            "cached_input_tokens": 1_024,
            "cache_write_input_tokens": 0,
            "output_tokens": 1_500,
            "reasoning_tokens": 1_200,
            "total_tokens": 3_548,
        },
    ]
    # endTime is the instant the event occurred, to the microsecond.
    assert crossing.json()["crossed_at"] == "2026-11-27T11:59:00.123456Z"
    assert crossing.json()["event_id"] in (text["id"], cache["id"], reasoning["id"])


# One bad payload between two good ones: it is rejected with every reason, each named in the
# payload's own fields, and the good ones beside it are stored.

SECRET_KEY_MESSAGE = (
    "looks like a secret key (sk-…), which tokenpulse never stores: name a key's identifier, "
    "such as metadata.user_api_key_hash"
)
TENANT_MESSAGE = (
    "is required: it names the event's tenant (TOKENPULSE_LITELLM_TENANT_FIELD) when the key is "
    "bound to none"
)
USAGE = "metadata.usage_object"


BAD_PAYLOADS: dict[str, tuple[dict[str, Any], list[tuple[str, str]]]] = {
    "id left out": ({"id": ...}, [("id", "is required")]),
    "id with a space": (
        {"id": "call 1"},
        [("id", "must be printable ASCII characters without spaces")],
    ),
    "endTime left out": ({"endTime": ...}, [("endTime", "is required")]),
    "endTime as text": (
        {"endTime": "2026-11-27 11:59:00"},
        [("endTime", "must be a number of seconds since 1970, got a string")],
    ),
    "endTime 40 days ago": (
        {"endTime": ENDED - 40 * 86400},
        [("endTime", "is older than the accepted 35 days")],
    ),
    "endTime past the year 9999": (
        {"endTime": 1e20},
        [("endTime", "must be seconds since 1970 of a year from 1 to 9999")],
    ),
    "model null": ({"model": None}, [("model", "is required")]),
    "model too long": (
        {"model": "m" * 200},
        [("model", "must be at most 128 characters, got 200")],
    ),
    "status left out": ({"status": ...}, [("status", "is required")]),
    "status unknown": (
        {"status": "ok"},
        [("status", "must be one of 'success', 'failure', got 'ok'")],
    ),
    "cache_hit as text": (
        {"cache_hit": "no"},
        [("cache_hit", "must be true, false or null, got a string")],
    ),
    "prompt_tokens as text": (
        {"prompt_tokens": "12000"},
        [("prompt_tokens", "must be an integer, got a string")],
    ),
    "prompt_tokens with a decimal point": (
        {"prompt_tokens": 12000.0},
        [
            (
                "prompt_tokens",
                "must be an integer, got a number with a decimal point or exponent",
            )
        ],
    ),
    "prompt_tokens over the limit": (
        {"prompt_tokens": 2_000_000_000},
        [("prompt_tokens", "must be at most 1,000,000,000, got 2000000000")],
    ),
    "completion_tokens negative": (
        {"completion_tokens": -1},
        [("completion_tokens", "must be at least 0, got -1")],
    ),
    "cached tokens above the prompt": (
        {f"{USAGE}.prompt_tokens_details.cached_tokens": 13_000},
        [
            (
                f"{USAGE}.prompt_tokens_details.cached_tokens",
                "must not exceed prompt_tokens (12,000), got 13,000",
            )
        ],
    ),
    "cache reads and writes above the prompt": (
        {f"{USAGE}.cache_creation_input_tokens": 5_000},
        [
            (
                f"{USAGE}.cache_creation_input_tokens",
                f"plus {USAGE}.prompt_tokens_details.cached_tokens (8,000) must not exceed "
                "prompt_tokens (12,000), got 5,000 (13,000 in all)",
            )
        ],
    ),
    "reasoning above the completion": (
        {f"{USAGE}.completion_tokens_details": {"reasoning_tokens": 901}},
        [
            (
                f"{USAGE}.completion_tokens_details.reasoning_tokens",
                "must not exceed completion_tokens (900), got 901",
            )
        ],
    ),
    "metadata not an object": (
        {"metadata": "team-acme"},
        [("metadata", "must be an object, got a string")],
    ),
    "usage_object not an object": (
        {USAGE: [8_000, 3_500]},
        [(USAGE, "must be an object, got an array")],
    ),
    "no team": (
        {"metadata.user_api_key_team_id": None},
        [("metadata.user_api_key_team_id", TENANT_MESSAGE)],
    ),
    "team not a string": (
        {"metadata.user_api_key_team_id": 42},
        [("metadata.user_api_key_team_id", "must be a string, got an integer")],
    ),
    "a secret key as api_key_id": (
        {"metadata.user_api_key_hash": "sk-live-4c2b9e"},
        [("metadata.user_api_key_hash", SECRET_KEY_MESSAGE)],
    ),
    "several fields at once": (
        {"id": "", "model": 7, "prompt_tokens": None},
        [
            ("id", "must not be empty"),
            ("model", "must be a string, got an integer"),
            ("prompt_tokens", "is required"),
        ],
    ),
}


@pytest.mark.parametrize(("changes", "problems"), BAD_PAYLOADS.values(), ids=BAD_PAYLOADS)
async def test_a_bad_payload_is_rejected_naming_each_of_its_fields_at_fault(
    client: httpx.AsyncClient,
    logged: dict[str, dict[str, Any]],
    changes: dict[str, Any],
    problems: list[tuple[str, str]],
) -> None:
    bad = payload(logged["cache"], changes)
    good = [payload(logged[kind]) for kind in ("text", "reasoning")]

    answer = await post(client, array(good[0], bad, good[1]))
    got = await totals(client, "model")

    assert answer.status_code == 200
    event_id = bad.get("id") if isinstance(bad.get("id"), str) else None
    assert answer.json() == {
        "accepted": 2,
        "duplicates": 0,
        "rejected": 1,
        "errors": [
            {
                "index": 1,
                "event_id": event_id,
                "errors": [{"field": field, "message": message} for field, message in problems],
            }
        ],
    }
    assert [result["model"] for result in got] == ["gpt-4o", "gpt-5-mini"]


async def test_a_payload_that_is_no_json_object_is_rejected_on_its_own(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    # LiteLLM queues None when it could not build a call's payload.
    answer = await post(client, array(payload(logged["text"]), None))

    assert answer.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": 1,
        "errors": [
            {
                "index": 1,
                "event_id": None,
                "errors": [{"field": None, "message": "a payload must be a JSON object, got null"}],
            }
        ],
    }


async def test_fields_tokenpulse_does_not_read_never_reject_a_payload(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    loose = payload(
        logged["reasoning"],
        {
            "hidden_params": None,
            "messages": {"anything": [1, "two", None]},
            "response": 42,
            "cost_breakdown": "n/a",
            "a_field_of_a_later_litellm": [{"nested": True}],
            "metadata.user_api_key_alias": {"not": "a string"},
            "metadata.requester_metadata": [None],
            f"{USAGE}.prompt_tokens_details.audio_tokens": "none",
            f"{USAGE}.completion_tokens_details.text_tokens": None,
            f"{USAGE}.server_tool_use": False,
        },
    )
    # An older LiteLLM, or a provider that reports no details: the parts count 0.
    bare = payload(logged["cache"], {USAGE: None})

    answer = await post(client, array(loose, bare))
    got = await totals(client, "model")

    assert (answer.status_code, answer.json()["accepted"]) == (200, 2)
    assert measured(got, "model") == [
        {
            "model": "claude-sonnet-4-5",
            "requests": 1,
            "input_tokens": 12_000,
            "cached_input_tokens": 0,
            "cache_write_input_tokens": 0,
            "output_tokens": 900,
            "reasoning_tokens": 0,
            "total_tokens": 12_900,
        },
        {
            "model": "gpt-5-mini",
            "requests": 1,
            "input_tokens": 2_048,
            "cached_input_tokens": 1_024,
            "cache_write_input_tokens": 0,
            "output_tokens": 1_500,
            "reasoning_tokens": 1_200,
            "total_tokens": 3_548,
        },
    ]


# What counts: a call a model processed. A cache hit and a failure without tokens are no usage;
# a failure that reports tokens is, as LiteLLM bills them on that payload.


async def test_a_failed_call_that_reports_no_tokens_is_neither_stored_nor_rejected(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    answer = await post(client, array(payload(logged["failure"])))

    assert (answer.status_code, answer.json()) == (
        200,
        {"accepted": 0, "duplicates": 0, "rejected": 0, "errors": []},
    )
    assert await totals(client, "model") == []


async def test_a_failed_call_that_reports_tokens_counts_them(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    # What LiteLLM logs for a stream cut off after the provider had read the prompt and
    # written part of the answer.
    cut = payload(
        logged["failure"],
        {"prompt_tokens": 640, "completion_tokens": 75, "total_tokens": 715},
    )
    cut["metadata"]["usage_object"] = {
        "prompt_tokens": 640,
        "completion_tokens": 75,
        "prompt_tokens_details": {"cached_tokens": 512},
    }

    answer = await post(client, array(cut))
    got = await totals(client, "model")

    assert answer.json()["accepted"] == 1
    assert measured(got, "model") == [
        {
            "model": "gpt-4o",
            "requests": 1,
            "input_tokens": 640,
            "cached_input_tokens": 512,
            "cache_write_input_tokens": 0,
            "output_tokens": 75,
            "reasoning_tokens": 0,
            "total_tokens": 715,
        }
    ]


async def test_a_call_answered_from_litellms_cache_is_no_usage(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    # LiteLLM logs the cached answer's usage again, under an id of its own, at no cost.
    hit = payload(
        logged["cache"],
        {"cache_hit": True, "id": f"{logged['cache']['id']}_cache_hit1795780740.1"},
    )

    answer = await post(client, array(hit, payload(logged["text"])))
    got = await totals(client, "model")

    assert answer.json() == ANSWERED_ONE
    assert [result["model"] for result in got] == ["gpt-4o"]


async def test_a_successful_call_without_tokens_is_a_request(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    # An image generation, priced by the image: the model ran, and reported no tokens.
    image = payload(
        logged["text"],
        {"call_type": "aimage_generation", "prompt_tokens": 0, "completion_tokens": 0, USAGE: {}},
    )

    answer = await post(client, array(image))
    got = await totals(client, "model")

    assert answer.json() == ANSWERED_ONE
    assert [(result["requests"], result["total_tokens"]) for result in got] == [(1, 0)]


# Who the usage is: the key's tenant, else the payload's team; its project and key.


async def test_a_key_bound_to_a_tenant_takes_every_payload_as_its_own(
    make_client: ClientFactory, keys: Keys, logged: dict[str, dict[str, Any]]
) -> None:
    bound = await keys.create("ingest", tenant="acme")
    no_team = payload(logged["text"], {"metadata.user_api_key_team_id": None})
    other_team = payload(logged["cache"])

    async with make_client(token=bound) as client:
        answer = await post(client, array(no_team, other_team))
    async with make_client() as client:
        got = await totals(client, "tenant")

    assert answer.json()["accepted"] == 2
    assert [(result["tenant"], result["requests"]) for result in got] == [("acme", 2)]


async def test_which_payload_fields_name_the_tenant_project_and_key_is_configurable(
    make_client: ClientFactory, logged: dict[str, dict[str, Any]]
) -> None:
    named = payload(logged["text"], {"metadata.requester_metadata": {"customer": "globex"}})
    settings = {
        "litellm_tenant_field": "metadata.requester_metadata.customer",
        "litellm_project_field": "",
        "litellm_api_key_id_field": "metadata.user_api_key_alias",
    }

    async with make_client(**settings) as client:
        answer = await post(client, array(named))
        got = await totals(client, "tenant,project,api_key_id")

    assert answer.json() == ANSWERED_ONE
    assert [(r["tenant"], r["project"], r["api_key_id"]) for r in got] == [
        ("globex", "default", "search-backend")
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("litellm_project_field", "messages", "must not name the call's content (messages)"),
        ("litellm_tenant_field", "response.id", "must not name the call's content (response)"),
        ("litellm_api_key_id_field", "metadata..hash", "must be a dotted path"),
        ("litellm_tenant_field", "", "at least 1 character"),
    ],
)
def test_no_setting_names_a_field_of_the_calls_content_or_no_field(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings.model_validate(
            {"database_url": "postgresql://unused@127.0.0.1/unused", name: value}
        )


# The bodies of LiteLLM's log formats, and the ones refused whole.


async def test_one_payload_alone_is_taken_compact_or_pretty_printed(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    compact = await post(client, safe_dumps(payload(logged["text"])))
    # As LiteLLM prints a payload with LITELLM_PRINT_STANDARD_LOGGING_PAYLOAD, for people to
    # copy into a request by hand.
    pretty = await post(client, json.dumps(payload(logged["cache"]), indent=4))

    assert [compact.json(), pretty.json()] == [ANSWERED_ONE, ANSWERED_ONE]


@pytest.mark.parametrize("content_type", [JSON, NDJSON, "application/jsonl"])
async def test_one_payload_a_line_is_taken_whatever_it_is_labelled(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]], content_type: str
) -> None:
    lines = [safe_dumps(payload(logged[kind])) for kind in ("text", "cache", "reasoning")]

    # LiteLLM's `ndjson` joins the payloads with newlines and sends them as application/json.
    answer = await post(client, "\n".join(lines), content_type)

    assert (answer.status_code, answer.json()) == (200, ANSWERED_ALL)


async def test_a_line_that_is_not_json_is_rejected_alone(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    lines = [safe_dumps(payload(logged["text"])), '{"id": "cut", ', "", "{}}"]

    answer = await post(client, "\n".join(lines))

    assert answer.json()["accepted"] == 1
    assert answer.json()["errors"] == [
        {
            "index": 1,
            "event_id": None,
            "errors": [
                {
                    "field": None,
                    "message": "the line is not valid JSON: Expecting property name enclosed in "
                    "double quotes at column 15",
                }
            ],
        },
        {
            "index": 2,
            "event_id": None,
            "errors": [
                {"field": None, "message": "the line is not valid JSON: extra data at column 3"}
            ],
        },
    ]


async def test_a_gzipped_body_is_taken(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    body = array(*(payload(logged[kind]) for kind in ("text", "cache", "reasoning")))

    answer = await post(client, gzip.compress(body.encode()), content_encoding="gzip")

    assert answer.json() == ANSWERED_ALL


async def test_a_key_a_payload_repeats_is_rejected_when_tokenpulse_reads_it(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    text = safe_dumps(payload(logged["text"]))
    # The last of a repeated key would win unnoticed: which the sender meant is not known.
    read = '{"prompt_tokens": 1, ' + text[1:]
    unread = '{"call_type": "x", ' + text[1:]

    answer = await post(client, f"[{read}, {unread}]")

    assert answer.json()["accepted"] == 1
    assert answer.json()["errors"][0]["errors"] == [
        {"field": "prompt_tokens", "message": "appears more than once"}
    ]


async def test_an_end_time_of_more_digits_than_python_reads_is_rejected_naming_it(
    client: httpx.AsyncClient, logged: dict[str, dict[str, Any]]
) -> None:
    text = safe_dumps(payload(logged["text"]))
    endless = text.replace(f'"endTime": {ENDED!r}', '"endTime": 1' + "0" * 5000)

    answer = await post(client, array(payload(logged["cache"]))[:-1] + f", {endless}]")

    assert answer.json()["accepted"] == 1
    assert answer.json()["errors"][0]["errors"] == [
        {"field": "endTime", "message": "must be seconds since 1970 of a year from 1 to 9999"}
    ]


async def test_payloads_past_the_limit_are_refused_before_they_are_decoded(
    make_client: ClientFactory, logged: dict[str, dict[str, Any]]
) -> None:
    good = safe_dumps(payload(logged["text"]))

    async with make_client(max_events_per_request=2) as client:
        # The third element is never decoded: that it is no JSON makes no difference.
        in_an_array = await post(client, f"[{good}, {good}, {{not json")
        a_line_each = await post(client, f"{good}\n{good}\n{{not json")

    for answer in (in_an_array, a_line_each):
        assert answer.status_code == 413
        assert answer.json()["error"]["message"] == (
            "the body holds more than 2 events; at most 2 are accepted at once"
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the body is empty"),
        ("[]", "the body holds no payloads"),
        ("[{}] []", "the body holds more than one JSON array"),
        ("[{} {}]", "the body is not valid JSON: expected ',' or ']' at char 4"),
        ("[{},]", "the body is not valid JSON: a value is missing at char 4"),
        ("{", "the body is not valid JSON: Expecting property name enclosed in double quotes"),
        ("42", "the body must be a payload object, an array of them, or one a line"),
        ("{\n{", "the body is not valid NDJSON: no line is valid JSON"),
    ],
)
async def test_a_body_that_holds_no_payloads_is_a_bad_request(
    client: httpx.AsyncClient, content: str, message: str
) -> None:
    answer = await post(client, content)

    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(message)


async def test_a_body_of_millions_of_empty_values_is_refused_before_any_is_decoded(
    client: httpx.AsyncClient,
) -> None:
    # Decoded, 4 MiB of these would be some two million lists in one payload.
    content = '[{"id": "a", "metadata": {"tags": [' + "[]," * 1_400_000 + '"]"]}}]'

    answer = await post(client, content)

    assert answer.status_code == 413
    assert answer.json()["error"]["message"] == (
        "the body holds more than 1,000,000 JSON values outside its strings; send fewer "
        "payloads at once"
    )


async def test_another_content_type_is_refused(client: httpx.AsyncClient) -> None:
    answer = await post(client, "[{}]", "text/plain")

    assert answer.status_code == 415


# LiteLLM's generic API logger sending to a running tokenpulse, in each of its log formats.


LITELLM_SPANS_ENV = {
    "TOKENPULSE_OTLP_TENANT_ATTRIBUTES": "metadata.user_api_key_team_id",
    "TOKENPULSE_OTLP_PROJECT_ATTRIBUTES": "metadata.user_api_key_project_id",
    "TOKENPULSE_OTLP_API_KEY_ID_ATTRIBUTES": "metadata.user_api_key_hash",
}
"""Where LiteLLM's OpenTelemetry callback puts what its generic API logger has in `metadata`."""


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests; each test empties the tables through `keys`."""
    env = {"TOKENPULSE_DATABASE_URL": database_url, **UNLIMITED_ENV, **LITELLM_SPANS_ENV}
    with running_server(tmp_path_factory.mktemp("litellm"), env=env) as server:
        yield server


@pytest.fixture
async def ingest_key(keys: Keys) -> str:
    return await keys.create("ingest")


def read(server: Server, keys: Keys, path: str, **params: str) -> Any:
    response = httpx.get(f"{server.url}{path}", params=params, headers=bearer(keys.admin))
    assert response.status_code == 200, response.text
    return response.json()


def through_litellm(
    server: Server, key: str, log_format: str, *, times: int = 1
) -> tuple[list[litellm.Usage | None], Gateway]:
    """`calls()` made through LiteLLM with its generic API logger sending to `server`, what it
    logged sent `times` times: the usage LiteLLM reported of each call, and the gateway."""

    async def scenario() -> tuple[list[litellm.Usage | None], Gateway]:
        gateway = Gateway(server.url, key, log_format)
        try:
            reported = await gateway.make(calls(), attributed())
            for _ in range(times):
                await gateway.send()
        finally:
            await gateway.close()
        return reported, gateway

    return in_a_loop_of_its_own(scenario)


def summed(answers: list[tuple[int, dict[str, Any]]]) -> dict[str, int]:
    assert {status for status, _ in answers} == {200}, answers
    return {
        name: sum(answer[name] for _, answer in answers)
        for name in ("accepted", "duplicates", "rejected")
    }


@pytest.mark.process
@pytest.mark.parametrize("log_format", FORMATS)
def test_what_litellm_logs_is_counted_as_litellm_reported_it_once_however_often_it_is_sent(
    server: Server, keys: Keys, ingest_key: str, log_format: str
) -> None:
    reported, gateway = through_litellm(server, ingest_key, log_format, times=2)

    usages = [usage for usage in reported if usage is not None]
    # `single` sends each payload in a request of its own, the others all in one.
    requests = len(gateway.logged) if log_format == "single" else 1
    first, again = gateway.answers[:requests], gateway.answers[requests:]
    assert len(usages) == SUCCESSES
    assert len(gateway.logged) == len(calls())
    # The failed call's payload, which reports no tokens, is neither stored nor rejected.
    assert summed(first) == {"accepted": SUCCESSES, "duplicates": 0, "rejected": 0}
    assert summed(again) == {"accepted": 0, "duplicates": SUCCESSES, "rejected": 0}
    group = {"tenant": TEAM, "project": PROJECT, "api_key_id": KEY_HASH}
    by_key = read(server, keys, "/v1/totals", **EVERYTHING, group_by="tenant,project,api_key_id")
    assert measured(by_key["results"], *group) == [{**group, **reported_measures(usages)}]
    by_model = read(server, keys, "/v1/totals", **EVERYTHING, group_by="model")
    models = {sent["model"] for sent in gateway.payloads() if sent["status"] == "success"}
    assert [result["model"] for result in by_model["results"]] == sorted(models)


async def text_holding(engine: AsyncEngine, text: str) -> list[str]:
    """Every `table.column` of text (or JSON) that holds `text` in some row."""
    columns = [
        column
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, String | JSONB)
    ]
    assert columns, "the schema has text columns to search"
    holding = []
    async with engine.connect() as connection:
        for column in columns:
            found = await connection.scalar(
                select(func.count()).where(cast(column, Text).contains(text, autoescape=True))
            )
            if found:
                holding.append(f"{column.table.name}.{column.name}")
    return holding


@pytest.mark.process
async def test_no_prompt_or_completion_reaches_the_database_or_the_log(
    server: Server, db: AsyncEngine, keys: Keys, ingest_key: str
) -> None:
    _, gateway = through_litellm(server, ingest_key, "json_array")

    assert MARKER in json.dumps(gateway.payloads()), "the prompts were sent"
    assert summed(gateway.answers)["accepted"] == SUCCESSES
    assert await text_holding(db, gateway.payloads()[0]["id"]) != [], "the search finds text"
    assert await text_holding(db, MARKER) == []
    assert MARKER not in server.log() + server.output()


# LiteLLM's OpenTelemetry callback, exporting to a running tokenpulse's /v1/traces.


@pytest.mark.process
def test_litellms_opentelemetry_callback_is_counted_as_litellm_reported(
    server: Server, keys: Keys, ingest_key: str
) -> None:
    async def scenario() -> list[litellm.Usage | None]:
        otel = OpenTelemetry(
            config=OpenTelemetryConfig(
                exporter="otlp_http",
                endpoint=f"{server.url}/v1/traces",
                headers=f"Authorization=Bearer {ingest_key}",
                # A provider of its own, not the process's: the other tests' spans stay theirs.
                skip_set_global=True,
            )
        )
        litellm.callbacks = [otel]
        try:
            reported = [await call(arguments, attributed()) for arguments in calls()]
            await GLOBAL_LOGGING_WORKER.flush()
        finally:
            litellm.logging_callback_manager.remove_callback_from_all_lists(otel)
        # The provider LiteLLM built from that configuration sends its spans in batches:
        # flushing it sends every span ended so far, and waits until each is answered.
        provider = otel._tracer_provider
        assert provider.force_flush()
        provider.shutdown()
        return reported

    reported = in_a_loop_of_its_own(scenario)

    usages = [usage for usage in reported if usage is not None]
    group = {"tenant": TEAM, "project": PROJECT, "api_key_id": KEY_HASH}
    by_key = read(server, keys, "/v1/totals", **EVERYTHING, group_by="tenant,project,api_key_id")
    # LiteLLM's spans carry a call's prompt and completion tokens, none of their parts: those
    # only its generic API logger reports.
    expected = {
        **reported_measures(usages),
        "cached_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "reasoning_tokens": 0,
    }
    assert measured(by_key["results"], *group) == [{**group, **expected}]
