"""Arrays in a query string as OpenAI's clients spell them: the `openai` SDK writes
`models[]=a&models[]=b`, plain HTTP clients `models=a&models=b`; both are one array."""

from collections.abc import Callable, Collection, Coroutine
from functools import cached_property
from typing import Any
from urllib.parse import quote, unquote_plus

from fastapi import Request, Response

from tokenpulse.query_string import CheckedQuery


class OpenAIQuery(CheckedQuery):
    """A strictly checked route that also reads `name[]` as `name` for each array it takes."""

    @cached_property
    def arrays(self) -> frozenset[str]:
        """The query parameters it takes that may repeat."""
        return frozenset(name for name, many in self.query_parameters.items() if many)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def unbracketed(request: Request) -> Response:
            # Rewritten where every reader of the query string finds it, the strict check and
            # FastAPI's parameters alike, before either has read it.
            query = request.scope["query_string"]
            request.scope["query_string"] = without_brackets(query, self.arrays)
            return await handler(request)

        return unbracketed


def without_brackets(query: bytes, arrays: Collection[str]) -> bytes:
    """`query` with each `name[]` of `arrays` renamed `name`; its values untouched."""
    if b"[" not in query and b"%5B" not in query.upper():
        return query
    parts = []
    for part in query.split(b"&"):
        key, equals, value = part.partition(b"=")
        name = unquote_plus(key.decode("latin-1"))
        if name.endswith("[]") and name[:-2] in arrays:
            key = quote(name[:-2]).encode()
        parts.append(key + equals + value)
    return b"&".join(parts)
