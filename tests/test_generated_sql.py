"""The SQL that tokenpulse generates, shown as text: a change to a statement is a reviewable diff
of the files in tests/sql/. `pytest --update-sql` writes them anew from the code."""

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from tokenpulse.exports.events import _events_of_model
from tokenpulse.ingest.writer import STORE_EVENTS
from tokenpulse.rollups.fold import FOLD
from tokenpulse.rollups.grains import DAY, HOUR, MINUTE
from tokenpulse.rollups.sums import Bucketing, _busiest, _sums

GOLDEN = Path(__file__).parent / "sql"


def compiled(statement: ClauseElement) -> str:
    """The statement as PostgreSQL gets it, a line per part of a union, so that it reads."""
    text = str(statement.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    return text.replace(" UNION ALL ", "\nUNION ALL\n")


def normalized(sql: str) -> str:
    """The statement's lines without trailing blanks, and without the blank lines around it."""
    return "\n".join(line.rstrip() for line in sql.strip().splitlines()) + "\n"


STATEMENTS: dict[str, Any] = {
    "store_events": lambda: STORE_EVENTS,
    "fold": lambda: FOLD,
    # A week of totals by model: days inside, hours and minutes at the edges, pending beside each.
    "totals_by_model": lambda: compiled(
        _sums(((MINUTE, 2), (HOUR, 2), (DAY, 1)), ("model",), (), Bucketing.NONE, False)
    ),
    # The same, priced: each row joined to the price version in effect at its bucket.
    "priced_totals_by_model": lambda: compiled(
        _sums(((MINUTE, 2), (HOUR, 2), (DAY, 1)), ("model",), (), Bucketing.NONE, True)
    ),
    # A tenant's hourly series by model.
    "series_of_a_tenant_by_model": lambda: compiled(
        _sums(((HOUR, 1),), ("model",), ("tenant",), Bucketing.STARTS, False)
    ),
    # One model's busiest minute since its launch: kept peaks, and minutes with pending deltas.
    "busiest_minute_of_a_model": lambda: compiled(_busiest((MINUTE, HOUR, DAY), ("model",))),
    # A tenant's export, resumed within one model: its events in order, each as its line.
    "export_of_a_tenant_resumed": lambda: (
        _events_of_model(("tenant",), resuming=True, limited=True).text
    ),
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_generated_sql_is_the_reviewed_text(name: str, request: pytest.FixtureRequest) -> None:
    path = GOLDEN / f"{name}.sql"
    text = normalized(STATEMENTS[name]())
    if request.config.getoption("--update-sql"):
        path.write_text(text)
    assert path.exists(), f"no {path.name}: run pytest --update-sql and review it"
    assert text == path.read_text(), f"{path.name} changed: run pytest --update-sql and review"
