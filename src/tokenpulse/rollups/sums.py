"""Summing rollup rows: which rows a selection reads, and the SQL that adds them up."""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from itertools import pairwise
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    ColumnElement,
    CompoundSelect,
    FromClause,
    Integer,
    Numeric,
    Select,
    bindparam,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.rollups.binds import (
    CACHED_PARTS,
    INSTANT,
    SHAPES_CACHED,
    filter_values,
    filtered,
    span_values,
    within,
)
from tokenpulse.rollups.costs import COST, cost_text, priced_cover, priced_join, priced_rows
from tokenpulse.rollups.cover import Span, cover
from tokenpulse.rollups.grains import MINUTE, Grain
from tokenpulse.rollups.running import first_reaching, search
from tokenpulse.rollups.selection import MEASURES, Selection
from tokenpulse.rollups.sources import rollup_rows
from tokenpulse.tables import NO_API_KEY, ROLLUP_COUNTS, rollup_pending

GroupSums = tuple[int, dict[str, Any]]
"""One group's sums: the index of its bucket in the bounds passed to `sum_rollups` (0 without),
then the group's value of each group_by dimension and the seven measures, as the API answers. A
plain pair: a series builds hundreds, and a dataclass instance cost as much again as its dict."""


class TooManyGroups(Exception):
    """A read would answer with more than `most` groups, a group counted once in each bucket.

    PostgreSQL returns at most one group past the bound, so that a refused read never costs the
    worker more than the largest answer it may give.
    """

    def __init__(self, most: int) -> None:
        super().__init__(f"more than {most:,} groups")
        self.most = most


class Bucketing(Enum):
    """How `sum_rollups` tells the buckets of its rows apart."""

    NONE = "none"
    """No buckets (totals): one sum per group."""
    STARTS = "starts"
    """Every rollup row read spans a whole bucket: grouped by the row's `bucket_start`."""
    SEARCH = "search"
    """Rows shorter than their buckets (hours in a local day, or several grains): each row's
    bucket is found among the bucket starts by `width_bucket`."""


async def sum_rollups(
    connection: AsyncConnection,
    selection: Selection,
    spans: Mapping[Grain, Sequence[Span]],
    bounds: Sequence[datetime] | None = None,
    *,
    most: int,
    priced: bool,
) -> list[GroupSums]:
    """The seven measures and the cost per group (and per bucket, when `bounds` are given),
    sorted by bucket, then by key in code point order; TooManyGroups if there are more than
    `most` of them. Unless `priced`, every cost is None without a look at any price.

    No rollup row that `spans` read may cross a bucket bound or, if `priced`, the start of a
    price version: each then falls in one bucket and is priced by one version.
    """
    if not spans or selection.matches_nothing:
        return []
    layout = tuple((grain, len(grain_spans)) for grain, grain_spans in spans.items())
    bucketing = _bucketing(spans, bounds)
    cached = sum(count for _, count in layout) <= CACHED_PARTS
    build = _sums if cached else _sums.__wrapped__
    statement = build(layout, selection.group_by, selection.dimensions, bucketing, priced)
    values: dict[str, Any] = {
        **filter_values(selection.filters),
        **span_values(span for grain_spans in spans.values() for span in grain_spans),
        "most_rows": most + 1,
    }
    starts = list(bounds[:-1]) if bounds is not None else []
    if bucketing is Bucketing.SEARCH:
        values["starts"] = starts
    # Fetched all at once: iterating the result row by row costs half as much again.
    records = (await connection.execute(statement, values)).all()
    if len(records) > most:
        raise TooManyGroups(most)
    # Sorted here rather than by ORDER BY ... COLLATE "C", which took PostgreSQL 0.7 of the 3.5 ms
    # it spent on a week of hours for 5 tenants. Python orders str by code point, which is "C"
    # order of UTF-8 text.
    key_columns = len(selection.group_by) + (bucketing is not Bucketing.NONE)
    if key_columns:
        records.sort(key=itemgetter(*range(key_columns)))
    names = (*selection.group_by, *MEASURES, "cost")
    # The shape of the statement fixes the length of its rows; zip need not check it.
    if bucketing is Bucketing.NONE:
        groups = [(0, dict(zip(names, record, strict=False))) for record in records]
    elif bucketing is Bucketing.STARTS:
        index = {start: number for number, start in enumerate(starts)}
        groups = [
            (index[record[0]], dict(zip(names, record[1:], strict=False))) for record in records
        ]
    else:
        groups = [(record[0], dict(zip(names, record[1:], strict=False))) for record in records]
    for _, group in groups:
        group["cost"] = cost_text(group.get("cost"))
    if "api_key_id" in selection.group_by:
        for _, group in groups:
            if group["api_key_id"] == NO_API_KEY:
                # The API says "no api key" as null.
                group["api_key_id"] = None
    return groups


async def groups_by_bucket(
    connection: AsyncConnection, selection: Selection, bounds: Sequence[datetime], *, most: int
) -> list[list[dict[str, Any]]]:
    """The groups of each bucket between consecutive `bounds` (whole minutes), each with the
    seven measures and the cost, priced at the versions in effect; TooManyGroups if there are
    more than `most` over all the buckets."""
    spans, priced = await priced_cover(connection, selection, bounds)
    groups = await sum_rollups(connection, selection, spans, bounds, most=most, priced=priced)
    buckets: list[list[dict[str, Any]]] = [[] for _ in bounds[:-1]]
    for bucket, group in groups:
        buckets[bucket].append(group)
    return buckets


def _bucketing(
    spans: Mapping[Grain, Sequence[Span]], bounds: Sequence[datetime] | None
) -> Bucketing:
    if bounds is None:
        return Bucketing.NONE
    if len(spans) == 1:
        (grain,) = spans
        if all(end - start == grain.length for start, end in pairwise(bounds)):
            # No row crosses a bound, so each row of a bucket's length is that bucket.
            return Bucketing.STARTS
    return Bucketing.SEARCH


@lru_cache(SHAPES_CACHED)
def _sums(
    layout: tuple[tuple[Grain, int], ...],
    group_by: tuple[str, ...],
    dimensions: tuple[str, ...],
    bucketing: Bucketing,
    priced: bool,
) -> Select[Any]:
    """`layout`: how many spans of each grain are read, their parts numbered in that order."""
    parts = []
    first = 0
    for grain, count in layout:
        parts.append(
            _rollup_rows(
                grain, range(first, first + count), group_by, dimensions, bucketing, priced
            )
        )
        first += count
    rows = union_all(*parts).subquery("rows")
    groups = [rows.c[name] for name in group_by]
    keys = groups if bucketing is Bucketing.NONE else [rows.c.bucket, *groups]
    sums = {count: func.sum(rows.c[count]) for count in ROLLUP_COUNTS}
    totals = [*sums.values(), sums["input_tokens"] + sums["output_tokens"]]
    columns: list[ColumnElement[Any]] = [*keys, *(cast(total, BigInteger) for total in totals)]
    source: FromClause = rows
    if priced:
        source, cost = priced_join(rows, dimensions)
        columns.append(cost)
    return (
        select(*columns)
        .select_from(source)
        .group_by(*keys)
        # Without keys SQL sums no rows into one row of NULLs; a range without events has no groups.
        .having(func.count() > 0)
        # One row past the most an answer may hold tells that there are too many, unsorted: the
        # rows are sorted only once they are known to be few enough.
        .limit(bindparam("most_rows", type_=Integer))
    )


def _rollup_rows(
    grain: Grain,
    parts: Iterable[int],
    group_by: tuple[str, ...],
    dimensions: tuple[str, ...],
    bucketing: Bucketing,
    priced: bool,
) -> Select[Any]:
    """The rollup rows of `grain` in the spans of `parts` that the filters match: the group_by
    columns, then the counts; first, unless `bucketing` is NONE, a column `bucket` that holds the
    row's `bucket_start` (STARTS) or its bucket's index (SEARCH); last, if `priced`, what prices
    the row: its model (`priced_model`) and its `bucket_start` (`at`)."""
    parts = tuple(parts)
    table = rollup_rows(grain, (*group_by, *dimensions), parts)
    columns: list[ColumnElement[Any]] = []
    if bucketing is Bucketing.STARTS:
        columns.append(table.c.bucket_start.label("bucket"))
    elif bucketing is Bucketing.SEARCH:
        starts = bindparam("starts", type_=ARRAY(INSTANT))
        # width_bucket numbers the buckets from 1.
        columns.append((func.width_bucket(table.c.bucket_start, starts) - 1).label("bucket"))
    columns += [table.c[name] for name in group_by]
    columns += [table.c[count] for count in ROLLUP_COUNTS]
    if priced:
        columns += [table.c.model.label("priced_model"), table.c.bucket_start.label("at")]
    in_spans = or_(false(), *(within(table.c.bucket_start, part) for part in parts))
    return select(*columns).where(in_spans, *filtered(table, dimensions))


def rollup_measure(table: FromClause, measure: str) -> ColumnElement[Any]:
    """`measure` as the rows of a rollup table hold it."""
    if measure == "total_tokens":
        total: ColumnElement[Any] = table.c.input_tokens + table.c.output_tokens
        return total
    column: ColumnElement[Any] = table.c[measure]
    return column


def _bucket_totals(
    grain: Grain, dimensions: tuple[str, ...], measure: str, part: int
) -> Select[Any]:
    """Each non-empty bucket of `grain` in the span of part `part`, with its sum of `measure`:
    of cost, in millionths, NULL where nothing in the bucket is priced. No bucket of a span read
    for cost may contain the start of a price version."""
    table = rollup_rows(grain, dimensions, (part,))
    source: FromClause = table
    if measure == COST:
        source, cost = priced_rows(table, table.c.model, table.c.bucket_start, dimensions)
        total = func.sum(cost).label("total")
    else:
        total = cast(func.sum(rollup_measure(table, measure)), BigInteger).label("total")
    return (
        select(table.c.bucket_start, total)
        .select_from(source)
        .where(within(table.c.bucket_start, part), *filtered(table, dimensions))
        .group_by(table.c.bucket_start)
    )


def rollup_counts(
    grain: Grain, dimensions: tuple[str, ...], part: int, *, priced: bool = False
) -> Select[Any]:
    """The counts of the rollup rows of `grain` in the span of part `part`, filtered by
    `dimensions`: one row each, to be summed; if `priced`, with what prices it (`priced_model`,
    and its `bucket_start` as `at`)."""
    table = rollup_rows(grain, dimensions, (part,))
    columns: list[ColumnElement[Any]] = [table.c[count] for count in ROLLUP_COUNTS]
    if priced:
        columns += [table.c.model.label("priced_model"), table.c.bucket_start.label("at")]
    return select(*columns).where(within(table.c.bucket_start, part), *filtered(table, dimensions))


async def bucket_sums(
    connection: AsyncConnection,
    selection: Selection,
    parts: Sequence[tuple[Grain, Span]],
    measure: str,
) -> list[tuple[Grain, datetime, int | Decimal | None]]:
    """The non-empty buckets in `parts` (spans of one grain each, none overlapping another),
    with their sum of `measure` (see `_bucket_totals`), in time order: one round trip however
    many parts there are."""
    if selection.matches_nothing or not parts:
        return []
    grains = tuple(grain for grain, _ in parts)
    statement = _bucket_sums(grains, selection.dimensions, measure)
    values = {**filter_values(selection.filters), **span_values(span for _, span in parts)}
    return [
        (grains[part], start, value)
        for part, start, value in await connection.execute(statement, values)
    ]


@lru_cache(SHAPES_CACHED)
def _bucket_sums(
    grains: tuple[Grain, ...], dimensions: tuple[str, ...], measure: str
) -> Select[Any]:
    rows = union_all(
        *(
            _bucket_totals(grain, dimensions, measure, part).add_columns(
                literal(part).label("part")
            )
            for part, grain in enumerate(grains)
        )
    ).subquery("buckets")
    return select(rows.c.part, rows.c.bucket_start, rows.c.total).order_by(rows.c.bucket_start)


async def crossing_buckets(
    connection: AsyncConnection,
    selection: Selection,
    measure: str,
    grain: Grain,
    searches: Sequence[tuple[Span, int | Decimal]],
) -> list[tuple[datetime, int | Decimal] | None]:
    """For each (span of whole `grain` buckets, sought sum): the bucket in which the running sum
    of `measure` from the span's start reaches it, with the sum before that bucket; None if it
    never does. One round trip for all of them."""
    if not searches or selection.matches_nothing:
        return [None] * len(searches)
    statement = _bucket_crossings(grain, selection.dimensions, measure, len(searches))
    found = await search(connection, statement, selection.filters, searches)
    return [None if row is None else (row.bucket_start, row.before) for row in found]


@lru_cache(SHAPES_CACHED)
def _bucket_crossings(
    grain: Grain, dimensions: tuple[str, ...], measure: str, searches: int
) -> CompoundSelect[Any]:
    return union_all(
        *(
            first_reaching(
                _bucket_totals(grain, dimensions, measure, part),
                order=["bucket_start"],
                value="total",
                part=part,
                sums=Numeric if measure == COST else BigInteger,
            )
            for part in range(searches)
        )
    )


async def busiest_minute(
    connection: AsyncConnection, selection: Selection, span: Span
) -> tuple[datetime, int] | None:
    """The minute in `span` (whole minutes) with the most total tokens, the earliest of ties.

    For one model's usage, the whole hours and days inside `span` answer with the busiest minute
    they keep, so a month costs about 30 day rows; any other selection reads every minute.
    """
    if selection.matches_nothing:
        return None
    models = selection.filters.get("model", ())
    if selection.group_by or set(selection.filters) != {"model"} or len(models) != 1:
        parts = [(MINUTE, span)]
    else:
        parts = cover(*span)
    if not parts:
        return None
    statement = _busiest(tuple(grain for grain, _ in parts), selection.dimensions)
    values = {**filter_values(selection.filters), **span_values(part for _, part in parts)}
    row = (await connection.execute(statement, values)).one_or_none()
    return None if row is None else (row[0], row[1])


@lru_cache(SHAPES_CACHED)
def _busiest(grains: tuple[Grain, ...], dimensions: tuple[str, ...]) -> Select[Any]:
    """Minute rollups for parts of minute grain; any coarser part, by model only, answers with
    the busiest minute each of its buckets keeps and with the minutes that have pending deltas."""
    candidates = union_all(
        *(
            candidate
            for part, grain in enumerate(grains)
            for candidate in (
                [_bucket_totals(grain, dimensions, "total_tokens", part)]
                if grain is MINUTE
                else [_kept_peaks(grain, part), _pending_minutes(part)]
            )
        )
    ).subquery("candidates")
    return (
        select(candidates.c.bucket_start, candidates.c.total)
        .order_by(candidates.c.total.desc(), candidates.c.bucket_start)
        .limit(1)
    )


def _kept_peaks(grain: Grain, part: int) -> Select[Any]:
    """The busiest minute that each bucket of `grain` in the span of part `part` keeps for the
    one model filtered."""
    table = grain.table_for(("model",))
    return select(
        table.c.peak_minute.label("bucket_start"), table.c.peak_minute_tokens.label("total")
    ).where(within(table.c.bucket_start, part), *filtered(table, ("model",)))


def _pending_minutes(part: int) -> Select[Any]:
    """The minutes in the span of part `part` that have pending deltas of the one model
    filtered, each with its whole total: folded and pending.

    The busiest minute a bucket keeps is the busiest of its folded minutes, and a minute's total
    only grows; so the busiest minute of the bucket is that one or one of these.
    """
    minutes = _bucket_totals(MINUTE, ("model",), "total_tokens", part)
    touched = select(rollup_pending.c.bucket_start).where(
        within(rollup_pending.c.bucket_start, part), *filtered(rollup_pending, ("model",))
    )
    return minutes.where(minutes.selected_columns.bucket_start.in_(touched))
