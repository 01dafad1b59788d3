"""The rollup grains: which pre-aggregated bucket sizes exist and the table that holds each."""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Table

from tokenpulse.tables import rollup_day, rollup_hour, rollup_minute


@dataclass(frozen=True)
class Grain:
    name: str
    length: timedelta
    table: Table

    @property
    def unit(self) -> str:
        """The `date_trunc` unit that floors an instant to this grain (in UTC)."""
        return self.name


MINUTE = Grain("minute", timedelta(minutes=1), rollup_minute)
HOUR = Grain("hour", timedelta(hours=1), rollup_hour)
DAY = Grain("day", timedelta(days=1), rollup_day)

# Finest first. Writers update every grain in this order, which is part of the fixed lock order.
GRAINS = (MINUTE, HOUR, DAY)
