"""The rollup grains: which pre-aggregated bucket sizes exist, and the tables that hold each."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Table

from tokenpulse.tables import ROLLUP_DIMENSIONS, ROLLUP_TABLES


@dataclass(frozen=True)
class Grain:
    name: str
    """Also the `date_trunc` unit of its buckets."""
    length: timedelta

    @property
    def tables(self) -> tuple[Table, ...]:
        """Its rollup tables, one row per bucket and group; every dimension's first."""
        return ROLLUP_TABLES[self.name]

    def table_for(self, dimensions: Iterable[str]) -> Table:
        """The table with the fewest dimensions that still has all of `dimensions`."""
        needed = set(dimensions)
        fitting = [table for table in self.tables if needed <= set(table.c.keys())]
        return min(fitting, key=lambda table: len(set(ROLLUP_DIMENSIONS) & set(table.c.keys())))


MINUTE = Grain("minute", timedelta(minutes=1))
HOUR = Grain("hour", timedelta(hours=1))
DAY = Grain("day", timedelta(days=1))

# Finest first: the order in which a range is covered, from its edges inwards.
GRAINS = (MINUTE, HOUR, DAY)
