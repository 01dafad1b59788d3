"""`GET /v1/events/export`: the stored events of a range, streamed as NDJSON (gzip if asked)."""

import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from starlette.responses import StreamingResponse
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from tokenpulse.auth import Caller, account_of, require
from tokenpulse.errors import InvalidParameters, Problem
from tokenpulse.exports.answers import MEDIA_TYPE, export_answers
from tokenpulse.exports.cursor import decode_cursor, encode_cursor
from tokenpulse.exports.events import Lines, Position, exported_lines
from tokenpulse.exports.slots import ExportSlots
from tokenpulse.instant_input import instant
from tokenpulse.openapi import AUTHENTICATED, needs_key
from tokenpulse.query_string import CheckedQuery, instant_query
from tokenpulse.replica import Source
from tokenpulse.rollups.selection import Selection
from tokenpulse.runtime import READ_FROM_HEADER, DashboardReads, Shared, WallClock
from tokenpulse.scopes import Scope
from tokenpulse.usage.params import ReaderFilters

router = APIRouter(tags=["events"], route_class=CheckedQuery)

EXPORT_SLOTS = Shared[ExportSlots]("export_slots")
WorkerExports = Annotated[ExportSlots, Depends(EXPORT_SLOTS.read)]

GZIP_LEVEL = 1
"""zlib's fastest: NDJSON of events still shrinks several times, for a fraction of the CPU."""


class ExportResponse(StreamingResponse):
    """A streamed answer that closes what it reads from when it ends, however it ends: sent in
    full (before its last chunk, so that a client that goes on with the next page at once
    finds its slot free), or its client gone."""

    media_type = MEDIA_TYPE

    def __init__(
        self,
        lines: AsyncIterator[bytes],
        *,
        gzip: bool,
        closing: AsyncExitStack,
        read_from: Source,
    ):
        headers = {
            "Cache-Control": "no-store",
            "Vary": "Accept-Encoding",
            READ_FROM_HEADER: read_from,
        }
        if gzip:
            headers["Content-Encoding"] = "gzip"
        super().__init__(self._closing_at_end(lines), headers=headers)
        self._closing = closing

    async def _closing_at_end(self, lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in lines:
            yield chunk
        await self._closing.aclose()

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._closing.aclose()


@router.get(
    "/v1/events/export",
    operation_id="exportEvents",
    summary="Export stored events",
    description="The stored events with `start <= occurred_at < end` that the filters match, one "
    "JSON object per line, each as `POST /v1/events` takes it. They come by model, then "
    "`occurred_at`, `event_id` and `tenant`; an answer reads one state of the database. "
    '`limit` ends an answer early with a last line `{"next_cursor": …}`: pass it as `cursor` '
    "(with the same filters, without `start` and `end`) for the rest. Gzip when the request's "
    "`Accept-Encoding` allows it. A tenant's key exports its tenant only.",
    response_class=ExportResponse,
    status_code=200,
    responses=export_answers(*AUTHENTICATED, 422),
    openapi_extra=needs_key(Scope.READ),
)
async def export_events(
    filters: ReaderFilters,
    caller: Annotated[Caller, Depends(require(Scope.READ))],
    exports: WorkerExports,
    reads: DashboardReads,
    clock: WallClock,
    start: Annotated[str | None, instant_query("First instant exported.")] = None,
    end: Annotated[str | None, instant_query("End of the range (exclusive); default now.")] = None,
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` an answer of this export ended with.")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="Most events this answer holds; default all.")
    ] = None,
    accept_encoding: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ExportResponse:
    first, last, after = _range(filters, start, end, cursor, now=clock())
    closing = AsyncExitStack()
    try:
        closing.enter_context(exports.slot(account_of(caller)))
        connection = await closing.enter_async_context(reads.snapshot(exports.engines))
        lines = exported_lines(connection, filters, first, last, after=after, limit=limit)
        closing.push_async_callback(lines.aclose)
        # The first lines are read before answering: a database that fails now gets an
        # error answer, not an empty export.
        opening = await anext(lines, None)
    except BaseException:
        await closing.aclose()
        raise
    body = _body(opening, lines, exports, start=first, end=last, selection=filters, limit=limit)
    gzip = _accepts_gzip(accept_encoding)
    return ExportResponse(
        _gzipped(body) if gzip else body, gzip=gzip, closing=closing, read_from=reads.source
    )


def _range(
    selection: Selection, start: str | None, end: str | None, cursor: str | None, *, now: datetime
) -> tuple[datetime, datetime, Position | None]:
    """The range an answer exports, and the position it resumes after."""
    if cursor is not None:
        if start is not None or end is not None:
            raise InvalidParameters.listing(
                [
                    Problem(name, "is carried by the cursor; leave it out")
                    for name, value in (("start", start), ("end", end))
                    if value is not None
                ]
            )
        return decode_cursor(cursor, selection)
    given = instant("start", start)
    if given is None:
        raise InvalidParameters.of("start", "is required (or a cursor)")
    return given, instant("end", end) or now, None


async def _body(
    opening: Lines | None,
    rest: AsyncIterator[Lines],
    exports: ExportSlots,
    *,
    start: datetime,
    end: datetime,
    selection: Selection,
    limit: int | None,
) -> AsyncIterator[bytes]:
    if opening is None:
        return
    written = 0
    ended_at = opening.last
    lines: Lines | None = opening
    while lines is not None:
        yield lines.text.encode()
        written += lines.count
        exports.observer.exported(lines.count)
        ended_at = lines.last
        lines = await anext(rest, None)
    if limit is not None and written == limit:
        cursor = encode_cursor(ended_at, start=start, end=end, selection=selection)
        yield f'{{"next_cursor":"{cursor}"}}\n'.encode()


async def _gzipped(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(GZIP_LEVEL, wbits=31)
    async for chunk in body:
        if packed := compressor.compress(chunk):
            yield packed
    yield compressor.flush()


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether `Accept-Encoding` allows gzip: named with a weight above 0, or, if not named,
    `*` with one (RFC 9110, section 12.5.3)."""
    weights: dict[str, float] = {}
    for part in (accept_encoding or "").split(","):
        coding, *parameters = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        weights[coding.lower()] = weight
    return weights.get("gzip", weights.get("*", 0.0)) > 0
