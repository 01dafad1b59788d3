"""The simulator's prices: the table `--prices` registers for its models, and the versions of a
model's prices as the server lists them, read to know what a run's tokens cost."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from operator import attrgetter
from urllib.parse import quote

import httpx

from tokenpulse.decimals import decimal_text
from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.simulator.retries import describe, request_until_answered


@dataclass(frozen=True)
class Prices:
    """One version's prices per million tokens, in the server's currency: `input` prices the
    uncached input, `reasoning` the reasoning part of output (the rest is priced as output)."""

    input: Decimal
    cached_input: Decimal
    cache_write_input: Decimal
    output: Decimal
    reasoning: Decimal

    def as_json(self) -> dict[str, str]:
        return {
            "input": decimal_text(self.input),
            "cached_input": decimal_text(self.cached_input),
            "cache_write_input": decimal_text(self.cache_write_input),
            "output": decimal_text(self.output),
            "reasoning": decimal_text(self.reasoning),
        }

    @classmethod
    def from_json(cls, parts: Mapping[str, str | None]) -> "Prices":
        """Prices as the server answers them: a reasoning price of null is that of output."""
        output = Decimal(str(parts["output"]))
        reasoning = parts.get("reasoning")
        return cls(
            input=Decimal(str(parts["input"])),
            cached_input=Decimal(str(parts["cached_input"])),
            cache_write_input=Decimal(str(parts["cache_write_input"])),
            output=output,
            reasoning=output if reasoning is None else Decimal(str(reasoning)),
        )


def _prices(**parts: str) -> Prices:
    return Prices(**{part: Decimal(text) for part, text in parts.items()})


# Priced like today's frontier models and their small siblings: a cache read costs a tenth of
# uncached input, a cache write a quarter more than it (the provider stores the prompt), and
# reasoning what output does. A mini model costs a tenth of its flagship's input, a fifth of its
# output.
FLAGSHIP = _prices(
    input="2.50", cached_input="0.25", cache_write_input="3.125", output="10.00", reasoning="10.00"
)
MINI = _prices(
    input="0.25", cached_input="0.025", cache_write_input="0.3125", output="2.00", reasoning="2.00"
)
MINI_SUFFIX = "-mini"


def table_prices(model: str) -> Prices:
    """What `--prices` registers for `model`: a model named …-mini is priced as a mini one,
    every other as a flagship."""
    return MINI if model.endswith(MINI_SUFFIX) else FLAGSHIP


@dataclass(frozen=True)
class Version:
    effective_from: datetime
    prices: Prices


class PricesUnreadable(Exception):
    """The server's price versions could not be read."""


async def versions_of(
    client: httpx.AsyncClient, model: str, *, give_up_seconds: float
) -> list[Version]:
    """The versions of `model`'s prices in effect on the server (none replaced or withdrawn)."""
    response = await request_until_answered(
        client, "GET", "/v1/prices", params={"model": model}, give_up_seconds=give_up_seconds
    )
    if response.status_code != 200:
        raise PricesUnreadable(f"GET /v1/prices answered {describe(response)}")
    versions = []
    for version in response.json()["prices"]:
        effective_from = parse_rfc3339(version["effective_from"])
        if effective_from is None:
            raise PricesUnreadable(f"effective_from is not RFC 3339: {version['effective_from']!r}")
        try:
            prices = Prices.from_json(version["per_million_tokens"])
        except (InvalidOperation, KeyError, TypeError):
            raise PricesUnreadable(
                f"per_million_tokens are not prices: {version['per_million_tokens']!r}"
            ) from None
        versions.append(Version(effective_from, prices))
    return versions


def during(versions: Sequence[Version], start: datetime, end: datetime | None) -> list[Version]:
    """The versions in effect at some instant of [start, end), `end` None for a run without end,
    in order: the one in effect at `start` if any, then each that starts after it."""
    ordered = sorted(versions, key=attrgetter("effective_from"))
    at_start = [version for version in ordered if version.effective_from <= start][-1:]
    inside = [
        version
        for version in ordered
        if start < version.effective_from and (end is None or version.effective_from < end)
    ]
    return at_start + inside


class PricesRefused(Exception):
    """The server did not put the simulator's prices in effect over the whole run."""


async def register_prices(
    client: httpx.AsyncClient,
    model: str,
    prices: Prices,
    *,
    start: datetime,
    end: datetime | None,
    give_up_seconds: float,
) -> None:
    """Have `prices` in effect for `model` over [start, end), putting a version from `start` (a
    whole minute) with the admin key `client` sends unless one with them is in effect already;
    raises PricesRefused, having put nothing, when other prices would price part of the run:
    the ledger checks the cost at `prices` alone."""
    path = f"/v1/prices/{quote(model, safe='')}"
    # A later version, left by another run or set by hand, would price the events after it.
    versions = await versions_of(client, model, give_up_seconds=give_up_seconds)
    in_effect = during(versions, start, end)
    later = [version for version in in_effect if version.effective_from > start]
    if other := [version for version in later if version.prices != prices]:
        since = format_rfc3339(other[0].effective_from)
        raise PricesRefused(
            f"{model} has other prices in effect from {since}, during the run; run without "
            f"--prices to check the cost at the server's, or withdraw them "
            f"(DELETE {path}?effective_from={since})"
        )
    if in_effect and in_effect[0].effective_from <= start and in_effect[0].prices == prices:
        # An earlier run's version prices this one too: another would only add to the list.
        return
    response = await request_until_answered(
        client,
        "PUT",
        path,
        json={"effective_from": format_rfc3339(start), "per_million_tokens": prices.as_json()},
        give_up_seconds=give_up_seconds,
    )
    if response.status_code == 409:
        raise PricesRefused(
            f"{model} has other prices in effect from {format_rfc3339(start)}; run without "
            f"--prices to check the cost at the server's, choose another --start, or replace "
            f"them (PUT {path}?replace=true)"
        )
    if response.status_code not in (200, 201):
        raise PricesRefused(f"registering the prices of {model}: {describe(response)}")
