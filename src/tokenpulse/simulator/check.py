"""The ledger against the server: its totals and their cost per model, the milestone crossings
it reports, and (checked in `notifications`) the crossings of the run's budgets."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import httpx

from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.simulator.ledger import MEASURES, Crossing, Ledger, Measures
from tokenpulse.simulator.notifications import BudgetCheck
from tokenpulse.simulator.prices import Prices, PricesUnreadable, during, versions_of
from tokenpulse.simulator.retries import describe, request_until_answered


@dataclass(frozen=True)
class Unchecked:
    """A model whose cost the ledger cannot tell from its token sums alone."""

    reason: str


@dataclass(frozen=True)
class TotalsCheck:
    model: str
    ledger: dict[str, int] | None
    server: dict[str, int] | None
    ledger_cost: Decimal | None = None
    """None: nothing the ledger holds of the model is priced."""
    server_cost: Decimal | None = None
    unchecked: Unchecked | None = None

    @property
    def cost_matches(self) -> bool:
        return self.unchecked is not None or self.ledger_cost == self.server_cost

    @property
    def matches(self) -> bool:
        return self.ledger == self.server and self.cost_matches


@dataclass(frozen=True)
class Reported:
    """A crossing as the server reports it."""

    crossed_at: datetime
    event_id: str


@dataclass(frozen=True)
class MilestoneCheck:
    model: str
    threshold: int
    predicted: Crossing | None
    reported: Reported | None
    problem: str | None = None
    """Why the server's answer could not be read, if it could not."""

    @property
    def matches(self) -> bool:
        if self.problem is not None:
            return False
        if self.predicted is None or self.reported is None:
            return self.predicted is None and self.reported is None
        return (self.predicted.crossed_at, self.predicted.event_id) == (
            self.reported.crossed_at,
            self.reported.event_id,
        )


@dataclass(frozen=True)
class Checks:
    totals: list[TotalsCheck]
    totals_problem: str | None
    milestones: list[MilestoneCheck]
    prices_problem: str | None = None
    """Why the prices to check the cost at could not be read, if they could not."""
    budgets: list[BudgetCheck] = field(default_factory=list)

    @property
    def priced(self) -> bool:
        """Whether any cost is in question: priced by the ledger, the server, or unchecked."""
        return any(
            check.ledger_cost is not None or check.server_cost is not None or check.unchecked
            for check in self.totals
        )

    @property
    def passed(self) -> bool:
        return (
            self.totals_problem is None
            and self.prices_problem is None
            and all(check.matches for check in self.totals)
            and all(check.matches for check in self.milestones)
            and all(check.matches for check in self.budgets)
        )


async def check_server(
    client: httpx.AsyncClient,
    ledger: Ledger,
    *,
    project: str,
    start: datetime,
    end: datetime,
    thresholds: Sequence[int],
    give_up_seconds: float,
    prices: Mapping[str, Prices] | None = None,
) -> Checks:
    """Compare what the server counts in `project` over [start, end) with the ledger, and what
    it says the tokens cost with what they cost at `prices`: those the run put in effect over
    [start, end) for each model, or, None, the server's own versions, read now.

    A server that cannot be reached raises GaveUp: it has not disagreed.
    """
    response = await request_until_answered(
        client,
        "GET",
        "/v1/totals",
        give_up_seconds=give_up_seconds,
        params={
            "start": format_rfc3339(start),
            "end": format_rfc3339(end),
            "group_by": "model",
            "project": project,
        },
    )
    server: dict[str, dict[str, int]] = {}
    server_costs: dict[str, Decimal | None] = {}
    totals_problem = None
    if response.status_code == 200:
        for row in response.json()["results"]:
            server[row["model"]] = {measure: row[measure] for measure in MEASURES}
            cost = row["cost"]
            try:
                server_costs[row["model"]] = None if cost is None else Decimal(_text(cost))
            except (InvalidOperation, TypeError):
                totals_problem = f"the cost of {row['model']} is not a decimal string: {cost!r}"
    else:
        totals_problem = f"GET /v1/totals answered {describe(response)}"
    models = sorted(ledger.totals.keys() | server.keys())
    prices_problem = None
    expected: Mapping[str, Prices | Unchecked | None]
    try:
        expected = (
            {model: prices.get(model) for model in models}
            if prices is not None
            else await _server_prices(client, models, start, end, give_up_seconds)
        )
    except PricesUnreadable as unreadable:
        prices_problem = str(unreadable)
        expected = {model: Unchecked("its prices could not be read") for model in models}
    totals = [
        TotalsCheck(
            model,
            _as_json(ledger.totals.get(model)),
            server.get(model),
            *_costs(ledger.totals.get(model), server_costs.get(model), expected.get(model)),
        )
        for model in models
    ]
    milestones = [
        await _milestone(client, ledger, project, start, model, threshold, give_up_seconds)
        for model in models
        for threshold in sorted(thresholds)
    ]
    return Checks(totals, totals_problem, milestones, prices_problem)


async def _server_prices(
    client: httpx.AsyncClient,
    models: Sequence[str],
    start: datetime,
    end: datetime,
    give_up_seconds: float,
) -> dict[str, Prices | Unchecked | None]:
    """The prices each model's tokens cost over [start, end) by the server's versions: None
    where none is in effect, Unchecked where they change inside."""
    expected: dict[str, Prices | Unchecked | None] = {}
    for model in models:
        versions = during(
            await versions_of(client, model, give_up_seconds=give_up_seconds), start, end
        )
        if not versions:
            expected[model] = None
        elif versions[0].effective_from > start:
            since = format_rfc3339(versions[0].effective_from)
            expected[model] = Unchecked(f"priced only from {since}, during the run")
        elif changed := [v for v in versions if v.prices != versions[0].prices]:
            since = format_rfc3339(changed[0].effective_from)
            expected[model] = Unchecked(f"its prices change at {since}, during the run")
        else:
            expected[model] = versions[0].prices
    return expected


def _text(value: object) -> str:
    """A cost as its decimal string: a JSON number would have been read as a float, inexact."""
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _costs(
    measures: Measures | None, server: Decimal | None, prices: Prices | Unchecked | None
) -> tuple[Decimal | None, Decimal | None, Unchecked | None]:
    if isinstance(prices, Unchecked):
        return None, server, prices
    ledger = measures.cost(prices) if measures is not None and prices is not None else None
    return ledger, server, None


async def _milestone(
    client: httpx.AsyncClient,
    ledger: Ledger,
    project: str,
    since: datetime,
    model: str,
    threshold: int,
    give_up_seconds: float,
) -> MilestoneCheck:
    predicted = next((c for c in ledger.crossings.get(model, []) if c.threshold == threshold), None)
    response = await request_until_answered(
        client,
        "GET",
        "/v1/milestones",
        give_up_seconds=give_up_seconds,
        params={
            "threshold": str(threshold),
            "since": format_rfc3339(since),
            "model": model,
            "project": project,
        },
    )
    if response.status_code != 200:
        problem = f"GET /v1/milestones answered {describe(response)}"
        return MilestoneCheck(model, threshold, predicted, None, problem)
    answer = response.json()
    if not answer["reached"]:
        return MilestoneCheck(model, threshold, predicted, None)
    crossed_at = parse_rfc3339(answer["crossed_at"])
    if crossed_at is None:
        problem = f"crossed_at is not RFC 3339: {answer['crossed_at']!r}"
        return MilestoneCheck(model, threshold, predicted, None, problem)
    return MilestoneCheck(model, threshold, predicted, Reported(crossed_at, answer["event_id"]))


def _as_json(measures: Measures | None) -> dict[str, int] | None:
    return measures.as_json() if measures is not None else None
