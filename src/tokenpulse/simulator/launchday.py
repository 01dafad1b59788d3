"""A seeded launch day: when requests come, from which tenants and keys, to which models, and with
how many tokens. The same parameters give the same events, in occurred_at order."""

import itertools
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import accumulate, islice
from statistics import NormalDist
from typing import Any

from tokenpulse.instants import parse_rfc3339

Event = dict[str, Any]

MINUTE = timedelta(minutes=1)
MICROSECONDS_PER_MINUTE = 60_000_000
INDEX_DIGITS = 9
MAX_EVENTS = 10**INDEX_DIGITS
MAX_NAME = 128

# The day's shape. Traffic follows the sun (busiest around 15:30 UTC, when Europe and the
# Americas overlap); the launch multiplies it by up to 1 + SURGE, building up over a few minutes
# as the news spreads and fading over a few hours.
DIURNAL_PEAK_HOUR = 15.5
DIURNAL_SWING = 0.55
SURGE = 3.0
SURGE_RAMP_MINUTES = 4.0
SURGE_FADE_HOURS = 2.0
MINUTE_NOISE = 0.08

# Customers: a few large tenants and a long tail (Zipf); a large tenant has more keys, but not
# proportionally more, and within a tenant a few keys carry most of the traffic.
TENANT_ZIPF = 1.1
KEYS_PER_TENANT_GROWTH = 0.6
KEY_ZIPF = 1.0

# Tokens are lognormal, as request sizes are: most prompts are short and a few fill the context.
# Each model draws its own medians and habits from the seed. The quantile table stands in for a
# normal draw per event; its 2^16 entries reach 4.3 standard deviations into the tail.
QUANTILES = 1 << 16
INPUT_SIGMA = 1.5
OUTPUT_SIGMA = 1.1
MAX_INPUT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 128_000

# Prompt caching: a request whose prompt is not in the cache (the first of a conversation) and is
# long enough to cache writes most of it there, for the requests after it to read.
CACHEABLE_INPUT_TOKENS = 1024


def occurred_at(event: Mapping[str, Any]) -> datetime:
    """The instant an event names."""
    text = event["occurred_at"]
    try:
        # Ten times faster than the full RFC 3339 parser, and right for the instants made here.
        instant: datetime | None = datetime.fromisoformat(text)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        instant = parse_rfc3339(text)
    if instant is None:
        raise ValueError(f"event {event['event_id']}: occurred_at is not RFC 3339")
    return instant


def tenant_name(rank: int, tenants: int) -> str:
    """The name of the tenant of `rank` (1 the largest) among `tenants`."""
    return f"tenant-{rank:0{_tenant_digits(tenants)}d}"


def _tenant_digits(tenants: int) -> int:
    return max(4, len(str(tenants)))


def project_of(seed: int) -> str:
    """The project every event of a seed's run belongs to, which keeps runs apart."""
    return f"sim-{seed}"


@dataclass(frozen=True)
class ModelHabits:
    """How one model is used: token sizes, how often prompts hit the cache, how often a prompt
    that misses it is written to it, and how often the model reasons."""

    input_median: float
    output_median: float
    cache_rate: float
    reasoning_rate: float
    cache_write_rate: float

    @classmethod
    def drawn(cls, seed: int, model: str) -> "ModelHabits":
        rng = random.Random(f"{seed}:model:{model}")
        return cls(
            input_median=rng.uniform(900.0, 2500.0),
            output_median=rng.uniform(150.0, 500.0),
            cache_rate=rng.uniform(0.3, 0.7),
            reasoning_rate=rng.uniform(0.3, 0.9),
            # Drawn last, so that the habits drawn before it stay what they were.
            cache_write_rate=rng.uniform(0.15, 0.4),
        )


@dataclass(frozen=True)
class LaunchDay:
    """`events` usage events of `models`, launched together at `start`, over `duration`."""

    start: datetime
    seed: int = 1
    models: Sequence[str] = ("pulse-1",)
    events: int = 200_000
    duration: timedelta = timedelta(hours=24)
    tenants: int = 2000
    api_keys: int = 20_000
    _tables: "_Tables" = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError("models must be one or more distinct names")
        if not all(1 <= len(model) <= MAX_NAME for model in self.models):
            raise ValueError(f"model names must have 1 to {MAX_NAME} characters")
        if not 1 <= self.events <= MAX_EVENTS:
            raise ValueError(f"events must lie between 1 and {MAX_EVENTS:,}")
        if self.duration < MINUTE or self.duration % MINUTE:
            raise ValueError("duration must be a whole number of minutes")
        if self.start.utcoffset() is None:
            raise ValueError("start must carry a time zone")
        if self.start.second or self.start.microsecond:
            raise ValueError("start must be a whole minute")
        if not 1 <= self.tenants <= self.api_keys:
            raise ValueError("there must be at least one tenant, and at least one key per tenant")
        # Instants are written in UTC with a Z, from the minute they lie in.
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "_tables", _Tables.of(self))

    @property
    def project(self) -> str:
        return project_of(self.seed)

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def largest_tenant(self) -> str:
        """The tenant drawn most often: the first of the Zipf ranks."""
        return tenant_name(1, self.tenants)

    def has_tenant(self, name: str) -> bool:
        prefix, _, rank = name.partition("-")
        return (
            prefix == "tenant"
            and rank.isdigit()
            and 1 <= int(rank) <= self.tenants
            and name == tenant_name(int(rank), self.tenants)
        )

    @cached_property
    def minute_counts(self) -> list[int]:
        """How many events each minute of the day holds; they add up to `events` exactly."""
        return apportion(self.events, list(islice(self._weights(), self.duration // MINUTE)))

    def _weights(self) -> Iterator[float]:
        """Each minute's share of the traffic, from the launch on, without end."""
        rng = random.Random(f"{self.seed}:minutes")
        for minute in itertools.count():
            yield _intensity(
                self.start + (minute + 0.5) * MINUTE, (minute + 0.5) / 60.0
            ) * rng.lognormvariate(0.0, MINUTE_NOISE)

    def _counts_going_on(self) -> Iterator[int]:
        """`minute_counts`, then the minutes past the end, each with as many events for its
        share of the traffic as the day had: the same curve, carried on without end."""
        yield from self.minute_counts
        weights = self._weights()
        per_weight = self.events / sum(islice(weights, self.duration // MINUTE))
        running, placed = 0.0, 0
        for weight in weights:
            running += weight
            bound = round(per_weight * running)
            yield bound - placed
            placed = bound

    def minutes(self, *, going_on: bool = False) -> Iterator[list[Event]]:
        """The events minute by minute, each minute's list in occurred_at order; `going_on`,
        the day's and then those of the minutes after it, without end."""
        rng = random.Random(f"{self.seed}:events")
        index = 0
        counts = self._counts_going_on() if going_on else self.minute_counts
        for minute, events in enumerate(counts):
            yield self._tables.minute(rng, self.start + minute * MINUTE, index, events)
            index += events

    def __iter__(self) -> Iterator[Event]:
        for events in self.minutes():
            yield from events

    def going_on(self) -> Iterator[Event]:
        """The day's events, then those of a launch that goes on past `end`, without end."""
        for events in self.minutes(going_on=True):
            yield from events

    def batches(self, size: int) -> Iterator[list[Event]]:
        """The events in lists of `size` (the last may be shorter), in occurred_at order."""
        events = iter(self)
        while batch := list(islice(events, size)):
            yield batch


def _intensity(instant: datetime, hours_since_launch: float) -> float:
    hour = instant.hour + instant.minute / 60.0
    daylight = 1.0 + DIURNAL_SWING * math.cos(2.0 * math.pi * (hour - DIURNAL_PEAK_HOUR) / 24.0)
    ramp = 1.0 - math.exp(-hours_since_launch * 60.0 / SURGE_RAMP_MINUTES)
    return daylight * (1.0 + SURGE * ramp * math.exp(-hours_since_launch / SURGE_FADE_HOURS))


def apportion(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split in proportion to `weights` into whole parts that add up to it exactly.

    Each boundary between parts is its running share rounded, so no part drifts by more than one.
    """
    cumulative = list(accumulate(weights))
    bounds = [round(total * running / cumulative[-1]) for running in cumulative]
    bounds[-1] = total
    return [high - low for low, high in zip([0, *bounds[:-1]], bounds, strict=True)]


def zipf_weights(count: int, exponent: float) -> list[float]:
    return [1.0 / rank**exponent for rank in range(1, count + 1)]


@dataclass(frozen=True)
class _Tables:
    """Everything precomputed, so that an event costs a few random numbers and one dict."""

    id_prefix: str
    project: str
    keys: list[tuple[str, str]]
    key_cumulative: list[float]
    models: Sequence[str]
    model_cumulative: list[float]
    habits: list[ModelHabits]
    input_quantiles: list[list[int]]
    output_quantiles: list[list[int]]

    @classmethod
    def of(cls, day: LaunchDay) -> "_Tables":
        tenant_weights = zipf_weights(day.tenants, TENANT_ZIPF)
        extra_keys = apportion(
            day.api_keys - day.tenants, [w**KEYS_PER_TENANT_GROWTH for w in tenant_weights]
        )
        tenant_digits = _tenant_digits(day.tenants)
        keys: list[tuple[str, str]] = []
        key_weights: list[float] = []
        for rank, (tenant_weight, extra) in enumerate(zip(tenant_weights, extra_keys, strict=True)):
            tenant = tenant_name(rank + 1, day.tenants)
            key_digits = max(2, len(str(extra + 1)))
            shares = zipf_weights(extra + 1, KEY_ZIPF)
            in_tenant = sum(shares)
            for number, share in enumerate(shares, start=1):
                keys.append((tenant, f"key-{rank + 1:0{tenant_digits}d}-{number:0{key_digits}d}"))
                key_weights.append(tenant_weight * share / in_tenant)
        habits = [ModelHabits.drawn(day.seed, model) for model in day.models]
        normal = NormalDist()
        z = [normal.inv_cdf((i + 0.5) / QUANTILES) for i in range(QUANTILES)]
        return cls(
            id_prefix=f"sim{day.seed}-",
            project=day.project,
            keys=keys,
            key_cumulative=list(accumulate(key_weights)),
            models=day.models,
            # The first model named is the one launching: shares fall off as 1 / rank.
            model_cumulative=list(accumulate(zipf_weights(len(day.models), 1.0))),
            habits=habits,
            input_quantiles=[
                _lognormal(z, h.input_median, INPUT_SIGMA, MAX_INPUT_TOKENS) for h in habits
            ],
            output_quantiles=[
                _lognormal(z, h.output_median, OUTPUT_SIGMA, MAX_OUTPUT_TOKENS) for h in habits
            ],
        )

    def minute(self, rng: random.Random, start: datetime, index: int, count: int) -> list[Event]:
        """The `count` events of the minute from `start`, numbered from `index`, in order."""
        draw = rng.random
        offsets = sorted([int(draw() * MICROSECONDS_PER_MINUTE) for _ in range(count)])
        keys = rng.choices(self.keys, cum_weights=self.key_cumulative, k=count)
        if len(self.models) == 1:
            which = [0] * count
        else:
            which = rng.choices(range(len(self.models)), cum_weights=self.model_cumulative, k=count)
        prefix = start.strftime("%Y-%m-%dT%H:%M:")
        id_prefix, project, models = self.id_prefix, self.project, self.models
        cache_rates = [habits.cache_rate for habits in self.habits]
        write_rates = [habits.cache_write_rate for habits in self.habits]
        reasoning_rates = [habits.reasoning_rate for habits in self.habits]
        inputs, outputs = self.input_quantiles, self.output_quantiles
        events: list[Event] = []
        append = events.append
        for number, offset, (tenant, api_key_id), model in zip(
            range(index, index + count), offsets, keys, which, strict=True
        ):
            input_tokens = inputs[model][int(draw() * QUANTILES)]
            output_tokens = outputs[model][int(draw() * QUANTILES)]
            # One uniform draw decides both whether a part exists and how large it is: below the
            # rate it exists, and scaled to [0, 1) it is the part's size.
            hit = draw()
            rate = cache_rates[model]
            cached = int(input_tokens * (0.2 + 0.8 * hit / rate)) if hit < rate else 0
            # A miss scaled to [0, 1) decides in the same way whether the prompt is written to
            # the cache and how much of it: no draw of its own, so every other count of a seed
            # stays what it was before cache writes were counted.
            miss = (hit - rate) / (1.0 - rate)
            rate = write_rates[model]
            written = (
                int(input_tokens * (0.6 + 0.4 * miss / rate))
                if 0.0 <= miss < rate and input_tokens >= CACHEABLE_INPUT_TOKENS
                else 0
            )
            thought = draw()
            rate = reasoning_rates[model]
            reasoning = int(output_tokens * (0.3 + 0.65 * thought / rate)) if thought < rate else 0
            # "1ssuuuuuu": seconds and microseconds in one conversion, cheaper than formatting.
            clock = str(offset + 100_000_000)
            append(
                {
                    "event_id": id_prefix + str(number).zfill(INDEX_DIGITS),
                    "occurred_at": prefix + clock[1:3] + "." + clock[3:] + "Z",
                    "tenant": tenant,
                    "project": project,
                    "model": models[model],
                    "api_key_id": api_key_id,
                    "input_tokens": input_tokens,
                    "cached_input_tokens": cached,
                    "cache_write_input_tokens": written,
                    "output_tokens": output_tokens,
                    "reasoning_tokens": reasoning,
                }
            )
        return events


def _lognormal(z: list[float], median: float, sigma: float, cap: int) -> list[int]:
    mu = math.log(median)
    return [min(cap, max(1, int(math.exp(mu + sigma * q)))) for q in z]
