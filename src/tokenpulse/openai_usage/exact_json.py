"""JSON in which a Decimal is a number written with every one of its digits.

OpenAI's costs answer amounts as JSON numbers; tokenpulse's costs are exact decimals, which a
float would round. A JSON number may hold any number of digits: a client that reads it as a
float gets the nearest float, and one that reads numbers as decimals gets the exact cost.
"""

import json
from decimal import Decimal

from tokenpulse.decimals import decimal_text


def exact_json(value: object) -> bytes:
    """`value` (dicts with str keys, lists, str, int, bool, None and Decimal) as UTF-8 JSON."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts).encode()


def _write(value: object, parts: list[str]) -> None:
    if isinstance(value, Decimal):
        parts.append(decimal_text(value))
    elif isinstance(value, dict):
        parts.append("{")
        for number, (key, item) in enumerate(value.items()):
            parts.append(("," if number else "") + json.dumps(key, ensure_ascii=False) + ":")
            _write(item, parts)
        parts.append("}")
    elif isinstance(value, list):
        parts.append("[")
        for number, item in enumerate(value):
            if number:
                parts.append(",")
            _write(item, parts)
        parts.append("]")
    else:
        parts.append(json.dumps(value, ensure_ascii=False))
