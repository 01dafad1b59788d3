"""A model name in a path, `{model:model_name}`: routes that name a model declare it so and
take it as `Model`, checked with `checked_model`."""

from typing import Annotated

from fastapi import Path
from starlette.convertors import Convertor, register_url_convertor

from tokenpulse.errors import InvalidParameters
from tokenpulse.model_names import model_problem
from tokenpulse.text import STRING_MAX

Model = Annotated[str, Path(min_length=1, max_length=STRING_MAX)]


class ModelName(Convertor[str]):
    """A model name in a path: all the rest of it, as the server decoded it.

    Names may hold slashes (`meta-llama/Llama-3-70b`), sent as they are or as %2F, which the
    server decodes before routing, and any other character ingest accepts, line breaks included
    (which Starlette's `path` convertor would not match). A route beneath a launch
    (`/v1/launches/{model}/...`) must be declared before the launch routes to be reached.
    """

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Starlette's one registry of convertors, read as routes are compiled; the same name registered
# again replaces it with its equal.
register_url_convertor("model_name", ModelName())


def checked_model(model: str) -> str:
    """`model` if it can name a model; else a 422 naming `model`."""
    if (problem := model_problem(model)) is not None:
        raise InvalidParameters.of("model", problem)
    return model
