"""The budgets a run sets (`--budget METRIC:LIMIT:WINDOW[:PERCENTS]`): the option's syntax, their
windows, and where the ledger predicts each threshold is crossed, by the crossing rule of the
contract."""

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tokenpulse.decimals import EXACT
from tokenpulse.instants import format_rfc3339
from tokenpulse.simulator.ledger import MEASURES, Measures
from tokenpulse.simulator.prices import Prices

COST = "cost"
METRICS = (*MEASURES, COST)
PERIODS = ("day", "week", "month", "since")
DEFAULT_PERCENTS = (Decimal(50), Decimal(80), Decimal(100))
MOST_PERCENT = Decimal(1000)
PERCENT_PLACES = 10
MOST_THRESHOLDS = 20
BIGGEST_COUNT = 2**63 - 1
AMOUNT = re.compile(r"[0-9]{1,18}(\.[0-9]{1,18})?")

Sum = int | Decimal
"""Of a measure, a count; of cost, an exact amount of the currency."""


class BadBudget(ValueError):
    """A `--budget` that is not one: the message says why."""


def parse_count(text: str) -> int | None:
    """A positive whole number written as 1000000, 1_000_000, 1e6 or 10^6; None if it is not."""
    written = text.strip().replace("_", "")
    if written.startswith("10^"):
        written = "1e" + written.removeprefix("10^")
    try:
        value = Decimal(written)
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value() or value < 1:
        return None
    return int(value)


@dataclass(frozen=True)
class Threshold:
    percent: Decimal | None
    """None: an absolute amount, as a server may notify at; the simulator sets percentages."""
    amount: Sum
    """`limit * percent / 100`, for a measure raised to a whole count."""


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime | None
    """None: the one window of a `since` budget, which never ends."""

    def holds(self, instant: datetime) -> bool:
        return self.start <= instant and (self.end is None or instant < self.end)


@dataclass(frozen=True)
class BudgetSpec:
    """One `--budget`: a limit on `metric` over each window, notified at `percents` of it."""

    metric: str
    limit: Sum
    period: str
    tz: str
    percents: tuple[Decimal, ...]
    text: str
    """As the option was written."""

    @classmethod
    def parse(cls, text: str) -> "BudgetSpec":
        """`METRIC:LIMIT:WINDOW[:PERCENTS]`, WINDOW being day, week or month (from midnight UTC,
        or `day@Europe/Berlin` in a zone) or since (from the launch on), PERCENTS
        comma-separated (default 50,80,100); raises BadBudget saying what is wrong."""
        parts = text.split(":")
        if not 3 <= len(parts) <= 4:
            raise BadBudget(f"{text!r} is not METRIC:LIMIT:WINDOW[:PERCENTS]")
        metric, limit_text, window_text = (part.strip() for part in parts[:3])
        if metric not in METRICS:
            raise BadBudget(f"{metric!r} is not one of {', '.join(METRICS)}")
        limit = _limit(metric, limit_text)
        period, _, tz = window_text.partition("@")
        if period not in PERIODS:
            raise BadBudget(f"window {window_text!r} is not one of day, week, month or since")
        if period == "since" and tz:
            raise BadBudget("window since starts at the launch, in no time zone")
        tz = tz or "UTC"
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadBudget(f"{tz!r} is not an IANA time zone such as Europe/Berlin") from None
        percents = _percents(parts[3]) if len(parts) == 4 else DEFAULT_PERCENTS
        return cls(metric, limit, period, tz, percents, text)

    @property
    def thresholds(self) -> list[Threshold]:
        """Each amount once, in increasing order, the first percentage named for it."""
        found: dict[Sum, Threshold] = {}
        with localcontext(EXACT):
            for percent in self.percents:
                share = self.limit * percent / 100
                amount = share.normalize() if self.metric == COST else math.ceil(share)
                found.setdefault(amount, Threshold(percent, amount))
        return sorted(found.values(), key=lambda threshold: threshold.amount)

    def window_at(self, instant: datetime, since: datetime) -> Window:
        """The window that holds `instant`: one day, week (from Monday) or month from midnight
        in the budget's zone, or for `since` the one from `since` on."""
        if self.period == "since":
            return Window(since, None)
        zone = ZoneInfo(self.tz)
        local = instant.astimezone(zone).date()
        if self.period == "week":
            first = local - timedelta(days=local.weekday())
            following = first + timedelta(days=7)
        elif self.period == "month":
            first = local.replace(day=1)
            following = (first + timedelta(days=31)).replace(day=1)
        else:
            first, following = local, local + timedelta(days=1)
        return Window(_midnight(first, zone), _midnight(following, zone))

    def request(self, *, tenant: str, project: str, since: datetime) -> dict[str, Any]:
        """The body of `POST /v1/budgets` that sets this budget on `tenant`'s usage in
        `project`."""
        body: dict[str, Any] = {
            "tenant": tenant,
            "project": project,
            "metric": self.metric,
            "limit": str(self.limit),
            "window": self.period,
            "thresholds": [_number(percent) for percent in self.percents],
        }
        if self.period == "since":
            body["since"] = format_rfc3339(since)
        else:
            body["tz"] = self.tz
        return body

    def describe(self) -> str:
        """Such as "total_tokens 5,000,000 a day (UTC)" or "cost 250 since the launch"."""
        limit = amount_text(self.limit)
        if self.period == "since":
            return f"{self.metric} {limit} since the launch"
        return f"{self.metric} {limit} a {self.period} ({self.tz})"


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    # Where a zone skips midnight, the time read before the change lands on the instant of the
    # change: the first of the day, as the contract has it.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _limit(metric: str, text: str) -> Sum:
    if metric == COST:
        if AMOUNT.fullmatch(text) is None or not Decimal(text):
            raise BadBudget(
                f"a cost limit is an amount such as 250 or 0.50, more than 0, got {text!r}"
            )
        return Decimal(text)
    count = parse_count(text)
    if count is None or count > BIGGEST_COUNT:
        raise BadBudget(f"a {metric} limit is a positive whole number, got {text!r}")
    return count


def _percents(text: str) -> tuple[Decimal, ...]:
    percents = []
    for part in text.split(","):
        try:
            percent = Decimal(part.strip())
        except InvalidOperation:
            raise BadBudget(f"threshold {part.strip()!r} is not a percentage") from None
        exponent = percent.normalize().as_tuple().exponent if percent.is_finite() else 0
        if (
            not percent.is_finite()
            or not 0 < percent <= MOST_PERCENT
            or (isinstance(exponent, int) and -exponent > PERCENT_PLACES)
        ):
            raise BadBudget(
                f"threshold {part.strip()!r} must be a percentage more than 0 and at most "
                f"{MOST_PERCENT}, with at most {PERCENT_PLACES} decimal places"
            )
        percents.append(percent)
    if len(percents) > MOST_THRESHOLDS:
        raise BadBudget(f"at most {MOST_THRESHOLDS} thresholds, got {len(percents)}")
    return tuple(percents)


def _number(percent: Decimal) -> int | float:
    """A percentage as a JSON number: at most 14 digits, which a float holds exactly enough to
    be read back as the same decimal."""
    return int(percent) if percent == percent.to_integral_value() else float(percent)


def amount_text(value: Sum) -> str:
    """A count with thousands separators; an amount of the currency exactly, without trailing
    zeros."""
    if isinstance(value, int):
        return f"{value:,}"
    return format(value.normalize(EXACT), ",f")


def percent_text(percent: Decimal | None) -> str:
    if percent is None:
        return "amount"
    return f"{format(percent.normalize(EXACT), ',f')}%"


@dataclass(frozen=True)
class BudgetCrossing:
    """The event at which a window's running sum first reached a threshold's amount."""

    threshold: Threshold
    crossed_at: datetime
    event_id: str
    value: Sum
    """The running sum with the crossing event: the amount or more."""


@dataclass
class WindowSum:
    """A window's running sum so far, and the crossings in it, in increasing amount."""

    window: Window
    running: Sum = 0
    crossings: list[BudgetCrossing] = field(default_factory=list)


class BudgetWatch:
    """One budget's running sums over `tenant`'s events in `project`, window by window.

    Events must come in (occurred_at, event_id) order, as the ledger folds them; a cost budget
    prices each event at its model's `prices` (an unpriced model's events cost nothing).
    """

    def __init__(
        self,
        spec: BudgetSpec,
        *,
        tenant: str,
        project: str,
        since: datetime,
        prices: Mapping[str, Prices] | None = None,
    ) -> None:
        if spec.metric == COST and prices is None:
            raise ValueError("a cost budget needs the prices of the models")
        self.spec = spec
        self.tenant = tenant
        self.project = project
        self.since = since
        self.thresholds = spec.thresholds
        self.windows: list[WindowSum] = []
        """Every window that holds one of the budget's events, in order."""
        self._prices = prices or {}

    def add(self, event: Mapping[str, Any], instant: datetime) -> None:
        if event["tenant"] != self.tenant or event["project"] != self.project:
            return
        if instant < self.since:
            return
        current = self.windows[-1] if self.windows else None
        if current is None or not current.window.holds(instant):
            current = WindowSum(self.spec.window_at(instant, self.since))
            self.windows.append(current)
        with localcontext(EXACT):
            current.running += self._value(event)
        thresholds, crossings = self.thresholds, current.crossings
        while (
            len(crossings) < len(thresholds)
            and current.running >= thresholds[len(crossings)].amount
        ):
            crossings.append(
                BudgetCrossing(
                    thresholds[len(crossings)], instant, event["event_id"], current.running
                )
            )

    def _value(self, event: Mapping[str, Any]) -> Sum:
        metric = self.spec.metric
        if metric == COST:
            prices = self._prices.get(event["model"])
            if prices is None:
                return Decimal(0)
            measures = Measures()
            measures.add(event)
            return measures.cost(prices)
        if metric == "requests":
            return 1
        if metric == "total_tokens":
            total: int = event["input_tokens"] + event["output_tokens"]
            return total
        part: int = event.get(metric) or 0
        return part


def parse_budgets(texts: Sequence[str]) -> list[BudgetSpec]:
    """Each `--budget`, in the order given; raises BadBudget naming the one at fault."""
    specs = []
    for text in texts:
        try:
            specs.append(BudgetSpec.parse(text))
        except BadBudget as bad:
            raise BadBudget(f"--budget {text}: {bad}") from None
    return specs
