"""Pydantic's validation errors in the house voice, for every path that validates with it:
events, the key and launch bodies, query and path parameters."""

from collections.abc import Mapping, Sized

from tokenpulse.text import echo

UNKNOWN = "is not a known field"

_SHOWN_MAX = 64
"""How much of a wrong value an answer quotes back."""

_TYPES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "list_type": "an array",
}
"""The types pydantic checks, as an answer names them; the value is named by its JSON type, or
quoted when it is text that did not parse (which is all a query parameter can be)."""
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


def house_message(kind: str, value: object, context: Mapping[str, object]) -> str:
    """What is wrong, for a pydantic error of type `kind` about `value` (its `input`), with the
    error's `ctx`; the field it concerns is named apart."""
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return UNKNOWN
    if kind in ("value_error", "assertion_error"):
        # A validator of ours raised it: its text is already in the house voice.
        return str(context["error"])
    if kind in _TYPES:
        got = _shown(value) if kind.endswith("_parsing") else json_type(value)
        return f"must be {_TYPES[kind]}, got {got}"
    if kind in ("literal_error", "enum"):
        # pydantic lists them as "'a', 'b' or 'c'".
        expected = ", ".join(str(context["expected"]).rsplit(" or ", 1))
        return f"must be one of {expected}, got {_shown(value)}"
    if kind in _BOUNDS:
        name, relation = _BOUNDS[kind]
        return f"must be {relation} {_number(context[name])}, got {_amount(value)}"
    if kind == "string_too_short":
        least = context["min_length"]
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {context['max_length']} characters, got {len(str(value))}"
    if kind == "string_unicode":
        return "must be valid Unicode (it holds a lone surrogate)"
    if kind in ("too_long", "too_short"):
        parts = "keys" if isinstance(value, dict) else "items"
        bound = "at most" if kind == "too_long" else "at least"
        limit = context["max_length" if kind == "too_long" else "min_length"]
        got = f", got {len(value)}" if isinstance(value, Sized) else ""
        return f"must have {bound} {limit} {parts}{got}"
    return f"is not valid ({kind})"


def _shown(value: object) -> str:
    """A wrong value as an answer quotes it: text quoted and shortened, else its JSON type.

    Query and path parameters are always text, so what was sent is quoted back.
    """
    if isinstance(value, str):
        return repr(echo(value, _SHOWN_MAX))
    return json_type(value)


def json_type(value: object) -> str:
    """The JSON type of a decoded value, as an answer names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a decimal point or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _number(bound: object) -> str:
    return f"{bound:,}" if isinstance(bound, int) else str(bound)


def _amount(value: object) -> str:
    """A number out of bounds as sent: the text of a parameter, or the JSON number."""
    if isinstance(value, str):
        return echo(value, _SHOWN_MAX)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value) if len(str(value)) <= _SHOWN_MAX else json_type(value)
    return json_type(value)
