"""What the server acknowledged: totals per model, what they cost, and the milestone crossings
they predict by the crossing rule of the contract."""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from operator import itemgetter
from typing import Any, Protocol

from tokenpulse.decimals import EXACT, per_million
from tokenpulse.simulator.launchday import occurred_at
from tokenpulse.simulator.prices import Prices

MEASURES = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "total_tokens",
)
MAX_KEPT_REJECTIONS = 10


@dataclass
class Measures:
    """The seven measures of the events added so far."""

    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, event: Mapping[str, Any]) -> None:
        self.requests += 1
        self.input_tokens += event["input_tokens"]
        self.cached_input_tokens += event.get("cached_input_tokens") or 0
        self.cache_write_input_tokens += event.get("cache_write_input_tokens") or 0
        self.output_tokens += event["output_tokens"]
        self.reasoning_tokens += event.get("reasoning_tokens") or 0

    def as_json(self) -> dict[str, int]:
        return {measure: getattr(self, measure) for measure in MEASURES}

    def cost(self, prices: Prices) -> Decimal:
        """What these tokens cost at `prices`, exactly: uncached input (input less cached and
        cache-write input) at the input price, output less reasoning at the output price."""
        uncached = self.input_tokens - self.cached_input_tokens - self.cache_write_input_tokens
        with localcontext(EXACT):
            millionths = (
                uncached * prices.input
                + self.cached_input_tokens * prices.cached_input
                + self.cache_write_input_tokens * prices.cache_write_input
                + (self.output_tokens - self.reasoning_tokens) * prices.output
                + self.reasoning_tokens * prices.reasoning
            )
        return per_million(millionths)


@dataclass(frozen=True)
class Crossing:
    """The event at which a model's running total_tokens first reached `threshold`."""

    model: str
    threshold: int
    crossed_at: datetime
    event_id: str


class CrossingWatch:
    """Running total_tokens per model from `since` on, and where each threshold was reached.

    Events must come in (occurred_at, event_id) order, the order the crossing rule counts in;
    event ids compare as ASCII, as Python compares them.
    """

    def __init__(self, *, since: datetime, thresholds: Iterable[int]) -> None:
        self.since = since
        self.thresholds = sorted(set(thresholds))
        if self.thresholds and self.thresholds[0] < 1:
            raise ValueError("thresholds must be positive")
        self.sums: dict[str, int] = {}
        self.crossings: dict[str, list[Crossing]] = {}
        self._last: tuple[datetime, str] | None = None

    def add(self, model: str, occurred_at: datetime, event_id: str, total_tokens: int) -> None:
        key = (occurred_at, event_id)
        if self._last is not None and key < self._last:
            raise ValueError(f"event {event_id} comes before the one added last")
        self._last = key
        if occurred_at < self.since:
            return
        running = self.sums.get(model, 0) + total_tokens
        self.sums[model] = running
        crossed = self.crossings.setdefault(model, [])
        while len(crossed) < len(self.thresholds) and running >= self.thresholds[len(crossed)]:
            crossed.append(Crossing(model, self.thresholds[len(crossed)], occurred_at, event_id))


def predict_crossings(
    events: Iterable[Mapping[str, Any]], *, since: datetime, thresholds: Iterable[int]
) -> dict[str, list[Crossing]]:
    """The crossings of `events`, in any order, by the contract's crossing rule."""
    keyed = sorted(
        ((occurred_at(event), event["event_id"], event) for event in events), key=itemgetter(0, 1)
    )
    watch = CrossingWatch(since=since, thresholds=thresholds)
    for instant, event_id, event in keyed:
        watch.add(event["model"], instant, event_id, _total_tokens(event))
    return watch.crossings


class EventWatch(Protocol):
    """Something more the ledger folds each stored event into, in (occurred_at, event_id)
    order: a budget's running sums."""

    def add(self, event: Mapping[str, Any], instant: datetime) -> None: ...


class Ledger:
    """The events the server answered for: every accepted or duplicate one is stored there.

    Batches are numbered in the order they were cut from an event stream in (occurred_at,
    event_id) order; answers arrive in any order and are folded in batch order, so that the
    crossings are predicted without keeping the events.
    """

    def __init__(
        self, *, since: datetime, thresholds: Iterable[int], watches: Sequence[EventWatch] = ()
    ) -> None:
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.rejections: list[dict[str, Any]] = []
        self.totals: dict[str, Measures] = {}
        self.latest: datetime | None = None
        """The newest occurred_at folded in so far: how far into the day the server has acked."""
        self._watch = CrossingWatch(since=since, thresholds=thresholds)
        self._watches = list(watches)
        self._waiting: dict[int, tuple[Sequence[Mapping[str, Any]], set[int]]] = {}
        self._next = 0

    @property
    def acked(self) -> int:
        return self.accepted + self.duplicates

    @property
    def total_tokens(self) -> int:
        return sum(measures.total_tokens for measures in self.totals.values())

    @property
    def crossings(self) -> dict[str, list[Crossing]]:
        """Crossings of the batches folded so far: all of them once every batch is recorded."""
        return self._watch.crossings

    @property
    def complete(self) -> bool:
        """Whether every batch recorded has been folded, none waiting for an earlier one."""
        return not self._waiting

    def record(
        self, batch: int, events: Sequence[Mapping[str, Any]], answer: Mapping[str, Any]
    ) -> None:
        """Batch number `batch` (0, 1, 2 …) was answered with `answer`, a 200's or a 422's body."""
        self.accepted += answer["accepted"]
        self.duplicates += answer["duplicates"]
        self.rejected += answer["rejected"]
        errors: list[dict[str, Any]] = answer.get("errors") or []
        room = max(MAX_KEPT_REJECTIONS - len(self.rejections), 0)
        self.rejections.extend(errors[:room])
        self._waiting[batch] = (events, {error["index"] for error in errors})
        while self._next in self._waiting:
            self._fold(*self._waiting.pop(self._next))
            self._next += 1

    def _fold(self, events: Sequence[Mapping[str, Any]], rejected: set[int]) -> None:
        totals, add, watches = self.totals, self._watch.add, self._watches
        instant = None
        for index, event in enumerate(events):
            if index in rejected:
                continue
            model = event["model"]
            measures = totals.get(model)
            if measures is None:
                measures = totals[model] = Measures()
            measures.add(event)
            instant = occurred_at(event)
            add(model, instant, event["event_id"], _total_tokens(event))
            for watch in watches:
                watch.add(event, instant)
        if instant is not None:
            self.latest = instant


def _total_tokens(event: Mapping[str, Any]) -> int:
    total: int = event["input_tokens"] + event["output_tokens"]
    return total
