"""Price files: LiteLLM's `model_prices_and_context_window.json` and a plain CSV, read as the
versions they hold."""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenpulse.decimals import EXACT, decimal_text
from tokenpulse.errors import InvalidParameters, Problem
from tokenpulse.instant_input import instant
from tokenpulse.model_names import model_problem
from tokenpulse.prices.rules import PARTS, PRICE_DIGITS, Prices, checked_prices

LITELLM_PARTS = {
    "input": "input_cost_per_token",
    "cached_input": "cache_read_input_token_cost",
    "cache_write_input": "cache_creation_input_token_cost",
    "output": "output_cost_per_token",
    "reasoning": "output_cost_per_reasoning_token",
}
"""Each part of a version and the field of a LiteLLM entry that prices it, per token."""

CSV_COLUMNS = ("model", *PARTS, "effective_from")
"""The columns a CSV price file may have, per million tokens; `model`, `input` and `output` are
required, an empty cell is a part left out."""


@dataclass(frozen=True, slots=True)
class Entry:
    model: str
    prices: Prices
    effective_from: datetime | None
    """None: the minute the import is given."""


@dataclass(frozen=True, slots=True)
class Skipped:
    where: str
    """The entry's model, or the CSV line."""
    reason: str


def read_price_file(text: str, kind: str) -> tuple[list[Entry], list[Skipped]]:
    """The versions a file of `kind` ("litellm" or "csv") holds, and what of it was not read.
    Raises ValueError for a file that is not of its kind at all."""
    if kind == "litellm":
        return _split(_litellm(text))
    return _split(_csv(text))


def _split(read: Iterator[Entry | Skipped]) -> tuple[list[Entry], list[Skipped]]:
    entries: list[Entry] = []
    skipped: list[Skipped] = []
    for item in read:
        if isinstance(item, Entry):
            entries.append(item)
        else:
            skipped.append(item)
    return entries, skipped


def _litellm(text: str) -> Iterator[Entry | Skipped]:
    try:
        document = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("not a LiteLLM price file: the JSON is not an object of models")
    for model, spec in document.items():
        if model == "sample_spec" or not isinstance(spec, dict):
            continue
        if spec.get(LITELLM_PARTS["input"]) is None or spec.get(LITELLM_PARTS["output"]) is None:
            # Image, audio, embedding and search models: priced by something else than tokens in
            # and out, or not at all.
            yield Skipped(model, "it has no input and output price per token")
            continue
        given = {
            part: spec[field]
            for part, field in LITELLM_PARTS.items()
            if spec.get(field) is not None
        }
        if wrong := [LITELLM_PARTS[part] for part, value in given.items() if not _number(value)]:
            yield Skipped(model, f"{', '.join(wrong)} must be a number per token")
            continue
        per_million = {part: _per_million(value) for part, value in given.items()}
        yield _entry(model, per_million, None, model)


def _number(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def _per_million(per_token: Decimal) -> str:
    """A per-token price as the text of a price per million tokens, to PRICE_DIGITS places: the
    file's numbers are floats written out, and some carry their binary error past them
    (0.0000029999900000000002 a token is 2.99999 a million)."""
    return decimal_text(per_token.scaleb(6, EXACT).quantize(_PLACES, context=EXACT))


_PLACES = Decimal(1).scaleb(-PRICE_DIGITS)


def _csv(text: str) -> Iterator[Entry | Skipped]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    unknown = [column for column in columns if column not in CSV_COLUMNS]
    missing = [column for column in ("model", "input", "output") if column not in columns]
    if unknown or missing:
        raise ValueError(
            f"the header must name the columns {', '.join(CSV_COLUMNS)} (model, input and output "
            f"required); "
            + "; ".join(
                [f"unknown: {', '.join(unknown)}"] * bool(unknown)
                + [f"missing: {', '.join(missing)}"] * bool(missing)
            )
        )
    for row in reader:
        where = f"line {reader.line_num}"
        given = {part: row[part] for part in PARTS if row.get(part)}
        effective_from: datetime | None = None
        if row.get("effective_from"):
            try:
                effective_from = instant("effective_from", row["effective_from"])
            except InvalidParameters as invalid:
                yield Skipped(where, invalid.message)
                continue
        yield _entry(row.get("model") or "", given, effective_from, where)


def _entry(
    model: str, given: dict[str, Any], effective_from: datetime | None, where: str
) -> Entry | Skipped:
    if (problem := model_problem(model)) is not None:
        return Skipped(where, f"model {problem}")
    prices = checked_prices(given, field=None)
    if not isinstance(prices, Prices):
        return Skipped(where, "; ".join(_named(problem) for problem in prices))
    return Entry(model, prices, effective_from)


def _named(problem: Problem) -> str:
    return f"{problem.field} {problem.message}"
