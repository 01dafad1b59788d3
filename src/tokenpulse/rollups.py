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
    """Its rows, one per bucket and group; `name` is the `date_trunc` unit of its buckets."""


MINUTE = Grain("minute", timedelta(minutes=1), rollup_minute)
HOUR = Grain("hour", timedelta(hours=1), rollup_hour)
DAY = Grain("day", timedelta(days=1), rollup_day)

# Finest first: the order in which a range is covered, from its edges inwards.
GRAINS = (MINUTE, HOUR, DAY)
