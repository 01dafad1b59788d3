"""The ledger against the server: its totals per model, and the milestone crossings it reports."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import httpx

from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.simulator.ledger import MEASURES, Crossing, Ledger, Measures
from tokenpulse.simulator.retries import describe, request_until_answered


@dataclass(frozen=True)
class TotalsCheck:
    model: str
    ledger: dict[str, int] | None
    server: dict[str, int] | None

    @property
    def matches(self) -> bool:
        return self.ledger == self.server


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

    @property
    def passed(self) -> bool:
        return (
            self.totals_problem is None
            and all(check.matches for check in self.totals)
            and all(check.matches for check in self.milestones)
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
) -> Checks:
    """Compare what the server counts in `project` over [start, end) with the ledger.

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
    totals_problem = None
    if response.status_code == 200:
        for row in response.json()["results"]:
            server[row["model"]] = {measure: row[measure] for measure in MEASURES}
    else:
        totals_problem = f"GET /v1/totals answered {describe(response)}"
    models = sorted(ledger.totals.keys() | server.keys())
    totals = [
        TotalsCheck(model, _as_json(ledger.totals.get(model)), server.get(model))
        for model in models
    ]
    milestones = [
        await _milestone(client, ledger, project, start, model, threshold, give_up_seconds)
        for model in models
        for threshold in sorted(thresholds)
    ]
    return Checks(totals, totals_problem, milestones)


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
