"""Small JSON request bodies (keys, launches): read only once the caller is known, size-limited,
and checked by a pydantic model into the one error shape."""

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from tokenpulse.errors import InvalidParameters, PayloadTooLarge

SMALL_BODY_BYTES = 64 * 1024

Model = TypeVar("Model", bound=BaseModel)


async def read_model(request: Request, model: type[Model]) -> Model:
    """The body as `model`: 413 past SMALL_BODY_BYTES, 422 naming each field at fault."""
    too_large = PayloadTooLarge(f"the body is larger than the limit of {SMALL_BODY_BYTES:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > SMALL_BODY_BYTES:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > SMALL_BODY_BYTES:
            raise too_large
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        raise InvalidParameters.from_validation(exc.errors()) from None
