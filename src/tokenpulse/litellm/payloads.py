"""A LiteLLM `StandardLoggingPayload` as the usage event it reports: the few fields tokenpulse
reads (every other one, of which LiteLLM has many and often null, is left alone), which payloads
are usage at all, and what is wrong with one, named in the payload's own fields.

A payload is usage when a model processed its call. LiteLLM answers a cache hit from its own
cache, and most failed calls reach no model: neither is stored nor counted as rejected. A failed
call that reports tokens (a stream cut off, a response a guardrail refused afterwards) was
processed, and LiteLLM bills those tokens on that payload and no other: it counts, like a
success. The conversation (`messages`, `response`, the error's text) is never read.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from tokenpulse.errors import Problem, capped
from tokenpulse.ingest.body import Undecodable
from tokenpulse.ingest.decoded import DuplicateKeys, LongInteger, describe
from tokenpulse.ingest.events import Checking, Event
from tokenpulse.ingest.validation import Rejection, Validated, validate_event
from tokenpulse.instants import format_rfc3339
from tokenpulse.settings import Settings
from tokenpulse.text import echo
from tokenpulse.validation_messages import house_message

Path = tuple[str, ...]

_USAGE = ("metadata", "usage_object")
_PROMPT_DETAILS = (*_USAGE, "prompt_tokens_details")

READ: dict[str, tuple[Path, ...]] = {
    "event_id": (("id",),),
    "model": (("model",),),
    "input_tokens": (("prompt_tokens",),),
    "output_tokens": (("completion_tokens",),),
    "cached_input_tokens": (
        (*_PROMPT_DETAILS, "cached_tokens"),
        (*_USAGE, "cache_read_input_tokens"),
    ),
    "cache_write_input_tokens": (
        (*_USAGE, "cache_creation_input_tokens"),
        (*_PROMPT_DETAILS, "cache_write_tokens"),
        (*_PROMPT_DETAILS, "cache_creation_tokens"),
    ),
    "reasoning_tokens": ((*_USAGE, "completion_tokens_details", "reasoning_tokens"),),
}
"""Where each field of the event is read: the first of its paths that holds a value. LiteLLM
counts cache reads, cache writes and reasoning within its prompt and completion tokens."""

END_TIME = ("endTime",)
STATUSES = ("success", "failure")

_SECRET_KEY_PREFIX = "sk-"
"""How LiteLLM's virtual keys (and OpenAI's) begin."""
_COUNTS = re.compile(r"\b(" + "|".join(name for name in READ if name.endswith("_tokens")) + r")\b")
"""The event's counts, as its rules' messages name them."""


@dataclass(frozen=True, slots=True)
class Attribution:
    """The payload fields that name an event's tenant, project and api key id; None: not read."""

    tenant: Path
    project: Path | None
    api_key_id: Path | None

    @classmethod
    def of(cls, settings: Settings) -> "Attribution":
        return cls(
            tenant=_path(settings.litellm_tenant_field),
            project=_path(settings.litellm_project_field) or None,
            api_key_id=_path(settings.litellm_api_key_id_field) or None,
        )


def _path(field: str) -> Path:
    return tuple(field.split(".")) if field else ()


def validate_payloads(
    payloads: list[object], checking: Checking, attribution: Attribution
) -> Validated:
    """Every payload that is usage, as its event or rejected with its reasons, in order; each
    rejection's index is the payload's place in the body."""
    validated = Validated()
    for index, payload in enumerate(payloads):
        checked = (
            [Problem(None, payload.message)]
            if isinstance(payload, Undecodable)
            else checked_payload(payload, checking, attribution)
        )
        if isinstance(checked, Event):
            validated.events.append(checked)
        elif checked is not None:
            validated.rejections.append(Rejection(index, _id_of(payload), checked))
    return validated


def checked_payload(
    payload: object, checking: Checking, attribution: Attribution
) -> Event | list[Problem] | None:
    """The event a payload reports, everything that is wrong with it, or None for a payload
    that is no usage."""
    if not isinstance(payload, dict):
        return [Problem(None, f"a payload must be a JSON object, got {describe(payload)}")]
    reading = _Reading(payload)
    if not reading.is_usage():
        return None
    for name, paths in READ.items():
        reading.read(name, *paths)
    reading.read_instant()
    if checking.key_tenant is None:
        reading.read("tenant", attribution.tenant)
    if attribution.project is not None:
        reading.read("project", attribution.project)
    if attribution.api_key_id is not None:
        reading.read_key_id(attribution.api_key_id)
    checked = validate_event(
        reading.event, key_tenant=checking.key_tenant, rules=checking.rules, now=checking.now
    )
    if isinstance(checked, Event) and not reading.problems:
        return checked
    return reading.all_wrong(checked if isinstance(checked, list) else [])


class _Reading:
    """A payload read into the event it reports, with the payload field each of the event's
    fields came from, and what is wrong with the way to them."""

    def __init__(self, payload: Mapping[str, object]) -> None:
        self.payload = payload
        self.event: dict[str, object] = {}
        self.sources: dict[str, str] = {}
        self.problems: list[Problem] = []

    def read(self, name: str, *paths: Path) -> object:
        """The event's field `name` from the first of `paths` that holds a value, if any."""
        for path in paths:
            if (value := self.value(path)) is not None:
                self.event[name], self.sources[name] = value, ".".join(path)
                return value
        self.sources[name] = ".".join(paths[0])
        return None

    def read_instant(self) -> None:
        """`endTime`, seconds since 1970, as the RFC 3339 instant it names, to the microsecond."""
        self.sources["occurred_at"] = ".".join(END_TIME)
        seconds = self.value(END_TIME)
        out_of_range = "must be seconds since 1970 of a year from 1 to 9999"
        if seconds is None:
            return
        if isinstance(seconds, LongInteger):
            self.problem(END_TIME, out_of_range)
            return
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            self.problem(
                END_TIME, f"must be a number of seconds since 1970, got {describe(seconds)}"
            )
            return
        try:
            self.event["occurred_at"] = format_rfc3339(datetime.fromtimestamp(seconds, UTC))
        except (OverflowError, ValueError, OSError):
            self.problem(END_TIME, out_of_range)

    def read_key_id(self, path: Path) -> None:
        key_id = self.read("api_key_id", path)
        if isinstance(key_id, str) and key_id.startswith(_SECRET_KEY_PREFIX):
            # Never stored, nor quoted back: the value is most likely a key's secret.
            del self.event["api_key_id"]
            self.problem(
                path,
                "looks like a secret key (sk-…), which tokenpulse never stores: name a key's "
                "identifier, such as metadata.user_api_key_hash",
            )

    def value(self, path: Path) -> object:
        """The value at `path`; None when it, or an object on the way, is absent or null."""
        value: object = self.payload
        for depth, key in enumerate(path):
            if not isinstance(value, dict):
                self.problem(path[:depth], f"must be an object, got {describe(value)}")
                return None
            if isinstance(value, DuplicateKeys) and key in value.duplicated:
                # The last of them would win, unnoticed: which one the sender meant is unknown.
                self.problem(path[: depth + 1], "appears more than once")
            value = value.get(key)
            if value is None:
                return None
        return value

    def problem(self, path: Path, message: str) -> None:
        field = ".".join(path)
        if all(problem.field != field for problem in self.problems):
            self.problems.append(Problem(echo(field), message))

    def is_usage(self) -> bool:
        """Whether a model processed the call: not a cache hit, nor a failure without tokens.
        Each of the fields that say so is checked, since a payload wrong in one is no usage
        tokenpulse can tell."""
        status = self.value(("status",))
        if status is None:
            self.problem(("status",), "is required")
        elif status not in STATUSES:
            self.problem(
                ("status",),
                house_message("literal_error", status, {"expected": "'success' or 'failure'"}),
            )
        cache_hit = self.value(("cache_hit",))
        if cache_hit is not None and not isinstance(cache_hit, bool):
            self.problem(("cache_hit",), f"must be true, false or null, got {describe(cache_hit)}")
        if cache_hit is True:
            return False
        counts = (self.value(("prompt_tokens",)), self.value(("completion_tokens",)))
        no_tokens = all(count is None or (type(count) is int and count == 0) for count in counts)
        return not (status == "failure" and no_tokens)

    def all_wrong(self, event_problems: list[Problem]) -> list[Problem]:
        """What was found wrong reading the payload, then what the event's rules found, named
        in the payload's fields; of those, none about a field whose problem is said already
        (the rules would only find it missing)."""
        said = {problem.field for problem in self.problems}
        in_payload_terms = [
            problem
            for problem in map(self._in_payload_terms, event_problems)
            if not any(_within(problem.field, field) for field in said)
        ]
        return capped([*self.problems, *in_payload_terms])

    def _in_payload_terms(self, problem: Problem) -> Problem:
        sources = self.sources
        field = sources.get(problem.field or "", problem.field)
        message = _COUNTS.sub(lambda name: sources.get(name[0], name[0]), problem.message)
        if problem.field == "tenant" and message == "is required":
            message = (
                "is required: it names the event's tenant (TOKENPULSE_LITELLM_TENANT_FIELD) "
                "when the key is bound to none"
            )
        return Problem(field, message)


def _within(field: str | None, outer: str | None) -> bool:
    """Whether `field` is `outer` or one of the fields inside it."""
    if field is None or outer is None:
        return False
    return field == outer or field.startswith(f"{outer}.")


def _id_of(payload: object) -> str | None:
    if isinstance(payload, dict) and isinstance(event_id := payload.get("id"), str):
        return echo(event_id)
    return None
