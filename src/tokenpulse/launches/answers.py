"""What `/v1/launches` and `/v1/milestones` answer, as `/openapi.json` describes it."""

from datetime import datetime
from typing import Annotated

from pydantic import Field

from tokenpulse.openapi import Count, Shape
from tokenpulse.usage.answers import Cost, Measures


class LaunchAnswer(Shape):
    model: str
    launched_at: datetime


class LaunchesAnswer(Shape):
    launches: list[LaunchAnswer]


class PeakMinute(Shape):
    start: datetime
    total_tokens: Count
    cost: Cost


class LaunchMilestone(Shape):
    threshold: int
    crossed_at: datetime | None
    seconds_after_launch: float | None
    event_id: str | None


class LaunchSummaryAnswer(LaunchAnswer):
    since_launch: Measures
    first_24h: Measures
    peak_minute: PeakMinute | None
    milestones: list[LaunchMilestone]


RunningSum = Annotated[
    int | str,
    Field(
        description="A count of the metric's measure; for `metric=cost`, an amount in the "
        "deployment's currency, an exact decimal string.",
        examples=[1000000000000, "1000000"],
    ),
]


class MilestoneAnswer(Shape):
    metric: str
    threshold: RunningSum
    since: datetime
    reached: bool
    crossed_at: datetime | None
    event_id: str | None
    seconds_after_since: float | None
    current: Annotated[
        RunningSum | None,
        Field(description="The running sum now; for cost, null while nothing in it is priced."),
    ]
