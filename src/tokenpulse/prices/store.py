"""Price versions in the database: set, replaced, withdrawn and listed, never changed in place."""

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.instants import format_rfc3339
from tokenpulse.prices.rules import Prices
from tokenpulse.tables import price_version


@dataclass(frozen=True, slots=True)
class PriceVersion:
    id: int
    model: str
    effective_from: datetime
    prices: Prices
    created_at: datetime
    ended_at: datetime | None
    """When it was replaced or withdrawn; None while it is in effect."""

    def as_json(self, currency: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "effective_from": format_rfc3339(self.effective_from),
            "currency": currency,
            "per_million_tokens": self.prices.as_json(),
            "created_at": format_rfc3339(self.created_at),
            "ended_at": None if self.ended_at is None else format_rfc3339(self.ended_at),
        }


class Outcome(Enum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    """The same prices were in effect from the same minute already."""
    REPLACED = "replaced"


class OtherPricesInEffect(Exception):
    """A version with other prices is in effect from that minute, and replacing was not asked."""

    def __init__(self, version: PriceVersion) -> None:
        super().__init__(f"version {version.id} is in effect from that minute")
        self.version = version


_COLUMNS = (
    price_version.c.id,
    price_version.c.model,
    price_version.c.effective_from,
    price_version.c.input,
    price_version.c.cached_input,
    price_version.c.cache_write_input,
    price_version.c.output,
    price_version.c.reasoning,
    price_version.c.created_at,
    price_version.c.ended_at,
)


def _version(row: Any) -> PriceVersion:
    prices = Prices(row.input, row.cached_input, row.cache_write_input, row.output, row.reasoning)
    return PriceVersion(row.id, row.model, row.effective_from, prices, row.created_at, row.ended_at)


async def put_price(
    connection: AsyncConnection,
    model: str,
    effective_from: datetime,
    prices: Prices,
    *,
    replace: bool,
) -> tuple[PriceVersion, Outcome, PriceVersion | None]:
    """Put `prices` in effect for `model` from `effective_from`: the version in effect, what was
    done, and the version replaced, if one was.

    The same prices in effect from that minute already change nothing. Other prices in effect
    from it raise OtherPricesInEffect unless `replace`: then the version they belong to ends now
    and a new one takes its place.
    """
    await _lock_prices(connection)
    current = (
        await connection.execute(
            select(*_COLUMNS).where(
                price_version.c.model == model,
                price_version.c.effective_from == effective_from,
                price_version.c.ended_at.is_(None),
            )
        )
    ).one_or_none()
    outcome, replaced = Outcome.CREATED, None
    if current is not None:
        existing = _version(current)
        if existing.prices == prices:
            return existing, Outcome.UNCHANGED, None
        if not replace:
            raise OtherPricesInEffect(existing)
        ended = (
            await connection.execute(
                update(price_version)
                .where(price_version.c.id == existing.id)
                .values(ended_at=func.now())
                .returning(*_COLUMNS)
            )
        ).one()
        outcome, replaced = Outcome.REPLACED, _version(ended)
    statement = (
        insert(price_version)
        .values(
            model=model,
            effective_from=effective_from,
            input=prices.input,
            cached_input=prices.cached_input,
            cache_write_input=prices.cache_write_input,
            output=prices.output,
            reasoning=prices.reasoning,
        )
        .returning(*_COLUMNS)
    )
    return _version((await connection.execute(statement)).one()), outcome, replaced


async def withdraw_price(
    connection: AsyncConnection, model: str, effective_from: datetime
) -> PriceVersion | None:
    """End the version of `model` in effect from `effective_from`: the version it was, or None
    if there was none. The version before it then applies until the next one."""
    await _lock_prices(connection)
    statement = (
        update(price_version)
        .where(
            price_version.c.model == model,
            price_version.c.effective_from == effective_from,
            price_version.c.ended_at.is_(None),
        )
        .values(ended_at=func.now())
        .returning(*_COLUMNS)
    )
    row = (await connection.execute(statement)).one_or_none()
    return None if row is None else _version(row)


async def analyze_prices(connection: AsyncConnection) -> None:
    """Refresh the planner's statistics of the price versions, in the transaction that changed
    them. Every priced read joins its rollup rows to the versions in effect; a planner that
    takes the table for a row or two joins them by a nested loop that tests every version
    against every row (at 16 versions, a priced series spent more on the join than on its
    scan), and autovacuum, where it runs at all, analyses a table only once 50 of its rows have
    changed, which a deployment's few versions may never reach."""
    await connection.execute(text("ANALYZE price_version"))


PRICE_WRITES_LOCK = 0x7072696365  # any constant of its own
"""The advisory lock every change of prices holds until it commits: prices change rarely, and
one lock for all of them serialises every put, replacement, withdrawal and import (however many
models it holds) without deadlocks or one lock per model."""


async def _lock_prices(connection: AsyncConnection) -> None:
    await connection.execute(select(func.pg_advisory_xact_lock(PRICE_WRITES_LOCK)))


async def list_prices(
    connection: AsyncConnection, *, model: str | None = None, ended: bool = False
) -> list[PriceVersion]:
    """The versions in effect (and with `ended`, those replaced or withdrawn too), by model in
    code point order, then by `effective_from`, then by id."""
    statement = select(*_COLUMNS).order_by(
        price_version.c.model.collate("C"), price_version.c.effective_from, price_version.c.id
    )
    if model is not None:
        statement = statement.where(price_version.c.model == model)
    if not ended:
        statement = statement.where(price_version.c.ended_at.is_(None))
    return [_version(row) for row in await connection.execute(statement)]
