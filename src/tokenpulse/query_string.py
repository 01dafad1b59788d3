"""The rule a strict route's query string follows: it names only parameters the route takes, and
a single-valued one only once."""

from collections.abc import Callable, Coroutine, Mapping
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi import Query, Request, Response, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from starlette.datastructures import QueryParams

from tokenpulse.errors import InvalidParameters, Problem
from tokenpulse.text import echo


class CheckedQuery(APIRoute):
    """A route whose query string may name only the parameters it declares (those OpenAPI
    lists), and a single-valued one only once: FastAPI would ignore any other, and keep the
    last of a repeated one.

    Like the path, the names in a query string are part of what is asked for: they are checked
    before anything else, the key included.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.query_parameters = declared_query(self)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            check_query(request.query_params, self.query_parameters)
            return await handler(request)

        return checked


def declared_query(route: APIRoute) -> dict[str, bool]:
    """Each query parameter `route` takes, its own or its dependencies', and whether it may
    repeat (a list)."""
    return {
        field.alias: _repeatable(field.field_info.annotation)
        for field in get_flat_params(route.dependant)
        if isinstance(field.field_info, params.Query)
    }


def check_query(query: QueryParams, declared: Mapping[str, bool]) -> None:
    problems: list[Problem] = []
    for name in query:
        if name not in declared:
            takes = ", ".join(declared) or "none"
            message = f"is not a parameter of this endpoint, which takes {takes}"
            problems.append(Problem(echo(name), message))
        elif not declared[name] and (given := len(query.getlist(name))) > 1:
            problems.append(Problem(name, f"takes one value, got {given}"))
    if problems:
        raise InvalidParameters.listing(problems)


def _repeatable(annotation: Any) -> bool:
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(get_origin(option) in (list, set, tuple) for option in (annotation, *options))


def instant_query(description: str) -> Any:
    """A query parameter that is an RFC 3339 instant (read with `instant_input.instant`)."""
    return Query(description=description, json_schema_extra={"format": "date-time"})
