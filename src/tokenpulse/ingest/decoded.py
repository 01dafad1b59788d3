"""What decoding JSON keeps that a plain parser loses (repeated keys, integers too long for
Python), and how an error names the JSON type of a decoded value."""

from collections import Counter
from dataclasses import dataclass
from typing import Any

from tokenpulse.validation_messages import json_type


class DuplicateKeys(dict[str, Any]):
    """A decoded JSON object in which some key appeared more than once (the last value kept)."""

    def __init__(self, pairs: list[tuple[str, Any]], duplicated: list[str]) -> None:
        super().__init__(pairs)
        self.duplicated = duplicated


def object_from_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` for `json.loads` that remembers duplicated keys, not just the last."""
    decoded = dict(pairs)
    if len(decoded) == len(pairs):
        return decoded
    counts = Counter(key for key, _ in pairs)
    return DuplicateKeys(pairs, [key for key, count in counts.items() if count > 1])


@dataclass(frozen=True, slots=True)
class LongInteger:
    """A JSON integer with more digits than Python converts (`sys.get_int_max_str_digits`)."""

    digits: int
    negative: bool


def integer_from_text(text: str) -> int | LongInteger:
    """`parse_int` for `json.loads`: an over-long integer is a bad count, not a bad body."""
    try:
        return int(text)
    except ValueError:
        return LongInteger(digits=len(text.lstrip("-")), negative=text.startswith("-"))


def describe(value: object) -> str:
    """The JSON type of a decoded value, as an error message names it."""
    return "an integer" if isinstance(value, LongInteger) else json_type(value)
