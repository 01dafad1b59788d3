"""Covering a range with rollup spans: minute, hour and day grains, coarse inside, fine at edges."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenpulse.rollups.cover import Span, cover, cover_buckets
from tokenpulse.rollups.grains import DAY, GRAINS, HOUR, MINUTE, Grain

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2026, 9, 1, tzinfo=UTC)
MONTHS_IN_MINUTES = 120 * 24 * 60


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant in November 2026, UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def is_aligned(instant: datetime, grain: Grain) -> bool:
    return (instant - EPOCH) % grain.length == timedelta(0)


def whole_minutes(limit: int) -> st.SearchStrategy[int]:
    """Minute counts up to `limit`, often whole hours or days, where the edge cases are."""
    return st.one_of(
        st.integers(0, limit),
        st.integers(0, limit // 60).map(lambda hours: hours * 60),
        st.integers(0, limit // 1440).map(lambda days: days * 1440),
    )


def assert_exact_cover(spans: list[tuple[Grain, Span]], start: datetime, end: datetime) -> None:
    """The spans are non-empty, grain-aligned, in order, touching, and exactly [start, end)."""
    edge = start
    for grain, (lo, hi) in spans:
        assert lo == edge
        assert lo < hi
        assert is_aligned(lo, grain)
        assert is_aligned(hi, grain)
        edge = hi
    assert edge == end


def test_a_range_inside_one_hour_is_read_in_minutes() -> None:
    assert cover(at(20, 10, 5), at(20, 10, 50)) == [(MINUTE, (at(20, 10, 5), at(20, 10, 50)))]


def test_a_whole_hour_is_read_as_one_hour_row() -> None:
    assert cover(at(20, 10), at(20, 11)) == [(HOUR, (at(20, 10), at(20, 11)))]


def test_a_whole_utc_day_is_read_as_one_day_row() -> None:
    assert cover(at(20), at(21)) == [(DAY, (at(20), at(21)))]


def test_half_past_nine_to_eleven_next_day_is_minutes_then_hours() -> None:
    # No whole UTC day fits in the range, so hours carry it after the first half hour.
    assert cover(at(20, 9, 30), at(21, 11)) == [
        (MINUTE, (at(20, 9, 30), at(20, 10))),
        (HOUR, (at(20, 10), at(21, 11))),
    ]


def test_a_range_of_several_days_is_days_inside_and_hours_and_minutes_at_the_edges() -> None:
    assert cover(at(20, 9, 30), at(23, 11, 15)) == [
        (MINUTE, (at(20, 9, 30), at(20, 10))),
        (HOUR, (at(20, 10), at(21))),
        (DAY, (at(21), at(23))),
        (HOUR, (at(23), at(23, 11))),
        (MINUTE, (at(23, 11), at(23, 11, 15))),
    ]


def test_an_empty_range_needs_no_spans() -> None:
    assert cover(at(20, 9, 30), at(20, 9, 30)) == []


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (at(20, 9, 30) + timedelta(seconds=30), at(20, 10)),
        (at(20, 9, 30), at(20, 10) + timedelta(microseconds=1)),
        (at(20, 10), at(20, 9)),
    ],
    ids=["start-not-whole-minute", "end-not-whole-minute", "end-before-start"],
)
def test_bounds_that_are_not_whole_minutes_in_order_are_refused(
    start: datetime, end: datetime
) -> None:
    with pytest.raises(ValueError, match="whole-minute"):
        cover(start, end)


def test_hour_buckets_read_whole_hours_merged_into_one_span() -> None:
    assert cover_buckets([at(20, 10), at(20, 11), at(20, 12), at(20, 13)]) == {
        HOUR: [(at(20, 10), at(20, 13))]
    }


def test_day_buckets_on_half_hour_midnights_read_hours_with_minutes_at_each_boundary() -> None:
    # Midnight in Asia/Kolkata (UTC+05:30) is 18:30 UTC.
    bounds = [at(19, 18, 30), at(20, 18, 30), at(21, 18, 30)]
    assert cover_buckets(bounds) == {
        MINUTE: [
            (at(19, 18, 30), at(19, 19)),
            (at(20, 18), at(20, 19)),
            (at(21, 18), at(21, 18, 30)),
        ],
        HOUR: [(at(19, 19), at(20, 18)), (at(20, 19), at(21, 18))],
    }


@given(start_minute=whole_minutes(MONTHS_IN_MINUTES), length=whole_minutes(MONTHS_IN_MINUTES))
def test_cover_is_exact_aligned_and_uses_the_coarsest_grain_that_fits(
    start_minute: int, length: int
) -> None:
    start = BASE + timedelta(minutes=start_minute)
    end = start + timedelta(minutes=max(length, 1))
    spans = cover(start, end)
    assert_exact_cover(spans, start, end)
    for grain, (lo, hi) in spans:
        for coarser in GRAINS[GRAINS.index(grain) + 1 :]:
            first_whole = lo + (EPOCH - lo) % coarser.length
            assert first_whole + coarser.length > hi, f"a whole {coarser.name} fits in {lo}..{hi}"


@given(
    start_minute=whole_minutes(MONTHS_IN_MINUTES),
    lengths=st.lists(whole_minutes(10 * 1440).map(lambda minutes: minutes + 1), max_size=12),
)
def test_cover_buckets_is_exact_and_no_row_it_reads_crosses_a_bucket_boundary(
    start_minute: int, lengths: list[int]
) -> None:
    bounds = [BASE + timedelta(minutes=start_minute)]
    for length in lengths:
        bounds.append(bounds[-1] + timedelta(minutes=length))
    by_grain = cover_buckets(bounds)
    spans = sorted(
        ((grain, span) for grain, grain_spans in by_grain.items() for span in grain_spans),
        key=lambda item: item[1],
    )
    assert_exact_cover(spans, bounds[0], bounds[-1])
    for grain, (lo, hi) in spans:
        # A span may run over a boundary only where its grain's rows begin, never mid-row.
        inside = [bound for bound in bounds if lo < bound < hi]
        assert all(is_aligned(bound, grain) for bound in inside), (grain.name, lo, hi)
