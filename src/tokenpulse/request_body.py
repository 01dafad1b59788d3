"""Small JSON request bodies (keys, launches): read only once the caller is known, size- and
time-limited, and checked by a pydantic model into the one error shape."""

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tokenpulse.arrival import BodyTimeouts, arriving
from tokenpulse.errors import InvalidParameters, PayloadTooLarge, Problem, UnsupportedMediaType
from tokenpulse.text import echo
from tokenpulse.validation_messages import json_type

SMALL_BODY_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


async def read_model(request: Request, model: type[Model], timeouts: BodyTimeouts) -> Model:
    """The body as `model`: 413 past SMALL_BODY_BYTES, 415 unless it says it is JSON, 408 past
    the timeouts, 422 naming each field at fault in the words events are refused with."""
    too_large = PayloadTooLarge(f"the body is larger than the limit of {SMALL_BODY_BYTES:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > SMALL_BODY_BYTES:
        raise too_large
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {media_type or 'none'}"
        )
    body = bytearray()
    async for chunk in arriving(request.stream(), timeouts):
        body += chunk
        if len(body) > SMALL_BODY_BYTES:
            raise too_large
    document = _decoded(bytes(body))
    if not isinstance(document, dict):
        problem = Problem(None, f"the body must be a JSON object, got {json_type(document)}")
        raise InvalidParameters.listing([problem])
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise InvalidParameters.from_validation(exc.errors()) from None


class _RepeatedKeys(ValueError):
    def __init__(self, keys: list[str]) -> None:
        super().__init__("repeated keys")
        self.keys = keys


def _decoded(body: bytes) -> Any:
    """The body as JSON, decoded as ingest decodes events: a repeated key, NaN or Infinity is
    refused, and a lone surrogate is kept, so that the model names the field that holds it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_json(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_without_repeats, parse_constant=_no_constant)
    except _RepeatedKeys as exc:
        problems = [Problem(echo(key), "appears more than once") for key in exc.keys]
        raise InvalidParameters.listing(problems) from None
    except RecursionError:
        reason = "nested too deeply"
    except ValueError as exc:
        reason = str(exc)
    raise _not_json(reason)


def _not_json(reason: str) -> InvalidParameters:
    return InvalidParameters.listing([Problem(None, f"the body is not valid JSON: {reason}")])


def _without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    decoded = dict(pairs)
    if len(decoded) < len(pairs):
        keys = [key for key, _ in pairs]
        raise _RepeatedKeys(sorted({key for key in keys if keys.count(key) > 1}))
    return decoded


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")
