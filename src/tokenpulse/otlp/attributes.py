"""The span attributes an event is read from: every spelling of each token count, the model,
the names of tenant, project and api key id the deployment chose, and how an attribute's value
reads as a count or a name."""

import re
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tokenpulse.settings import Settings
from tokenpulse.text import echo

COUNTS: dict[str, tuple[str, ...]] = {
    "input_tokens": (
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
    ),
    "output_tokens": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cached_input_tokens": (
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write_input_tokens": (
        "gen_ai.usage.cache_write.input_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning_tokens": (
        "gen_ai.usage.reasoning.output_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
}
"""Each measure's attribute names, the first present winning: a span with any of them is a
usage span."""

COUNT_NAMES = frozenset(name for names in COUNTS.values() for name in names)

MODELS = ("gen_ai.response.model", "gen_ai.request.model")
"""The model that answered, else the one asked for."""

Attributes = Mapping[str, AnyValue]
"""A span's or a resource's attributes, by key: only those an event may be read from."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the deployment reads a span's event from, beside its counts and model."""

    tenant: tuple[str, ...]
    project: tuple[str, ...]
    api_key_id: tuple[str, ...]
    rollups: tuple[tuple[str, str], ...]
    """(attribute, value) pairs that mark a span adding up the calls below it."""
    wanted: frozenset[str]
    """Every attribute name any of the above reads: all others are passed over unread."""

    @classmethod
    def of(cls, settings: Settings) -> "Reading":
        rollups = tuple(
            (name.strip(), value.strip())
            for name, _, value in (pair.partition("=") for pair in settings.otlp_rollup_spans)
        )
        tenant = tuple(settings.otlp_tenant_attributes)
        project = tuple(settings.otlp_project_attributes)
        api_key_id = tuple(settings.otlp_api_key_id_attributes)
        wanted = COUNT_NAMES.union(
            MODELS, tenant, project, api_key_id, (name for name, _ in rollups)
        )
        return cls(tenant, project, api_key_id, rollups, wanted)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Why an attribute's value is not what its name says it holds."""

    message: str


def present(value: AnyValue) -> bool:
    """Whether an attribute says anything: instrumentations write "" for what they do not
    know (LiteLLM, for a count or a team it has not got)."""
    kind = value.WhichOneof("value")
    return kind is not None and not (kind == "string_value" and value.string_value == "")


def first_present(attributes: Attributes, names: tuple[str, ...]) -> tuple[str, AnyValue] | None:
    for name in names:
        value = attributes.get(name)
        if value is not None and present(value):
            return name, value
    return None


_DECIMAL = re.compile(r"-?[0-9]{1,19}")


def count_of(value: AnyValue) -> int | Unreadable:
    """A present value as a token count: an integer, a double that is a whole number (what
    JavaScript and JSON make of one) or a string of decimal digits."""
    kind = value.WhichOneof("value")
    if kind == "int_value":
        return value.int_value
    if kind == "double_value" and value.double_value.is_integer():
        return int(value.double_value)
    if kind == "string_value" and _DECIMAL.fullmatch(value.string_value):
        return int(value.string_value)
    return Unreadable(f"must be an integer, got {_described(value)}")


def name_of(value: AnyValue) -> str | Unreadable:
    """A present value as a name: a string, or an integer as its decimal digits."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    return Unreadable(f"must be a string, got {_described(value)}")


def _described(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return f'the string "{echo(value.string_value, 32)}"'
    if kind == "double_value":
        return f"the double {value.double_value!r}"
    return {
        "bool_value": "a boolean",
        "int_value": "an integer",
        "array_value": "an array",
        "kvlist_value": "a key-value list",
        "bytes_value": "bytes",
    }.get(kind or "", "no value")
