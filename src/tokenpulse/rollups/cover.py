"""Covering a time range with few rollup rows: coarse grains inside, finer ones at the edges."""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise

from tokenpulse.instants import ceil_to, floor_to
from tokenpulse.rollups.grains import GRAINS, MINUTE, Grain

Span = tuple[datetime, datetime]


def cover(start: datetime, end: datetime) -> list[tuple[Grain, Span]]:
    """Half-open spans of whole grain buckets that together are exactly [start, end).

    `start` and `end` must be whole minutes. Coarser grains are used wherever at least one
    whole bucket of theirs fits, so a 30-day range reads about 30 day rows, not 43,200 minutes.
    """
    if end < start or any(floor_to(bound, MINUTE.length) != bound for bound in (start, end)):
        raise ValueError("cover() needs whole-minute bounds with start <= end")
    spans: list[tuple[Grain, Span]] = []
    level = 0
    while level + 1 < len(GRAINS):
        coarser = GRAINS[level + 1]
        aligned = ceil_to(start, coarser.length)
        if aligned + coarser.length > end:
            break
        if start < aligned:
            spans.append((GRAINS[level], (start, aligned)))
        start = aligned
        level += 1
    for grain in reversed(GRAINS[: level + 1]):
        aligned = floor_to(end, grain.length)
        if aligned > start:
            spans.append((grain, (start, aligned)))
            start = aligned
    return spans


def cover_split(start: datetime, end: datetime, at: Iterable[datetime]) -> list[tuple[Grain, Span]]:
    """`cover(start, end)` split at each instant of `at` (whole minutes) inside: no span it
    gives crosses one. Empty when `start >= end`."""
    if start >= end:
        return []
    pieces = [start, *sorted(instant for instant in at if start < instant < end), end]
    return [part for low, high in pairwise(pieces) for part in cover(low, high)]


def cover_buckets(bounds: Sequence[datetime]) -> dict[Grain, list[Span]]:
    """For consecutive buckets [bounds[i], bounds[i+1]), the spans to read, by grain, merged.

    Spans of neighbouring buckets are merged, but no rollup row a span reads crosses a bucket
    boundary, so every such row belongs to exactly one bucket.
    """
    for grain in GRAINS:
        # The common case of a series: its buckets are consecutive rollup buckets of one grain.
        if floor_to(bounds[0], grain.length) == bounds[0] and all(
            end - start == grain.length for start, end in pairwise(bounds)
        ):
            return {grain: [(bounds[0], bounds[-1])]} if len(bounds) > 1 else {}
    by_grain: dict[Grain, list[Span]] = defaultdict(list)
    for start, end in pairwise(bounds):
        for grain, span in cover(start, end):
            by_grain[grain].append(span)
    return {grain: _merge(spans) for grain, spans in by_grain.items()}


def _merge(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
