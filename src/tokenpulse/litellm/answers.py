"""What `POST /v1/integrations/litellm` reads, as `/openapi.json` describes it: the fields of a
LiteLLM payload that tokenpulse reads, among the many it leaves alone. It answers as
`/v1/events` does."""

from typing import Any

from tokenpulse.ingest.answers import CONTENT_ENCODING
from tokenpulse.settings import Settings

_COUNT = {"type": "integer", "minimum": 0}
_PAYLOAD = {
    "type": "object",
    "description": "A `StandardLoggingPayload`: one model call as LiteLLM logs it. "
    "tokenpulse reads only the fields described here, and leaves every other one alone, "
    "whatever its value; the call's conversation is never read. A cache hit, and a failure "
    "that reports no tokens, are no usage: neither stored nor counted as rejected.",
    "required": ["id", "status", "endTime", "model", "prompt_tokens", "completion_tokens"],
    "properties": {
        "id": {"type": "string", "description": "The event's `event_id`."},
        "status": {"type": "string", "enum": ["success", "failure"]},
        "cache_hit": {
            "type": ["boolean", "null"],
            "description": "true: answered from LiteLLM's cache, no usage.",
        },
        "endTime": {
            "type": "number",
            "description": "Seconds since 1970: the event's `occurred_at`.",
        },
        "model": {"type": "string"},
        "prompt_tokens": _COUNT | {"description": "The event's `input_tokens`."},
        "completion_tokens": _COUNT | {"description": "The event's `output_tokens`."},
        "metadata": {
            "type": ["object", "null"],
            "description": "By default `user_api_key_team_id` names the tenant (when the key "
            "is bound to none), `user_api_key_project_id` the project and "
            "`user_api_key_hash` the api_key_id; `usage_object` holds the parts of the "
            "counts: `prompt_tokens_details.cached_tokens` (or `cache_read_input_tokens`), "
            "`cache_creation_input_tokens` (or `prompt_tokens_details.cache_write_tokens`) "
            "and `completion_tokens_details.reasoning_tokens`.",
        },
    },
}


def payload_body() -> dict[str, Any]:
    """`openapi_extra` for the route: what each of LiteLLM's log formats sends, maybe gzipped."""
    # Described at its default: a deployment may change it.
    max_events = Settings.model_fields["max_events_per_request"].default
    payloads = {"type": "array", "items": _PAYLOAD, "minItems": 1, "maxItems": max_events}
    return {
        "parameters": [CONTENT_ENCODING],
        "requestBody": {
            "required": True,
            "description": "LiteLLM's `json_array` (an array of payloads), `single` (one "
            "payload) or `ndjson` (one payload a line, which LiteLLM sends as "
            "application/json too).",
            "content": {
                "application/json": {"schema": {"oneOf": [_PAYLOAD, payloads]}},
                "application/x-ndjson": {
                    "schema": payloads | {"description": "One payload a line."}
                },
            },
        },
    }
