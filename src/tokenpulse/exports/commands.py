"""`tokenpulse export`: stored events written as NDJSON from the database directly, to a file that
a second run with `--resume` carries on after an interruption."""

import argparse
import gzip
import json
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.exports.events import Position, exported_lines
from tokenpulse.instant_input import instant
from tokenpulse.instants import format_rfc3339, parse_rfc3339
from tokenpulse.rollups.selection import parse_selection

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]

FILTERS = ("tenant", "project", "model", "api_key_id")


class Refused(Exception):
    """What stops the command, in one line (exit status 2)."""


def add_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("--start", required=True, help="first instant exported (RFC 3339)")
    export.add_argument("--end", help="end of the range, exclusive (RFC 3339; default now)")
    for name in FILTERS:
        export.add_argument(
            f"--{name.replace('_', '-')}",
            action="append",
            dest=name,
            help=f"keep only events of this {name} (repeat for several)",
        )
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.add_argument("--gzip", action="store_true", help="write the file gzipped")
    export.add_argument(
        "--resume",
        action="store_true",
        help="carry on after the last whole line of --output, written by the same command "
        "with the same --start, --end and filters",
    )


async def run(args: argparse.Namespace, transaction: Transaction, *, now: datetime) -> int:
    try:
        return await _export(args, transaction, now=now)
    except Refused as refused:
        print(f"tokenpulse: {refused}", file=sys.stderr)
        return 2


async def _export(args: argparse.Namespace, transaction: Transaction, *, now: datetime) -> int:
    try:
        start = instant("start", args.start)
        end = instant("end", args.end) or now
        selection = parse_selection(
            None, {name: values for name in FILTERS if (values := getattr(args, name))}
        )
    except InvalidParameters as invalid:
        raise Refused(str(invalid)) from None
    assert start is not None
    if args.resume and args.gzip:
        # An interrupted run leaves its gzip stream cut short, with nothing to resume after.
        raise Refused("--resume carries on plain NDJSON only: export again without --gzip")
    if args.resume and args.end is None:
        # With the end left to now, the rest would be of another range than the file's start.
        raise Refused("--resume needs the --end the export was started with")
    after = _resume_point(args)
    written = 0
    with ExitStack() as files:
        output = _open(args, files)
        async with transaction() as connection:
            # One state of the database for the whole file, however long it takes to write.
            await connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            async for lines in exported_lines(connection, selection, start, end, after=after):
                output.write(lines.text.encode())
                written += lines.count
    where = "standard output" if args.output is None else str(args.output)
    print(
        f"tokenpulse: exported {written:,} event{'' if written == 1 else 's'} from "
        f"{format_rfc3339(start)} to {format_rfc3339(end)} to {where}",
        file=sys.stderr,
    )
    return 0


def _open(args: argparse.Namespace, files: ExitStack) -> IO[bytes]:
    if args.output is None:
        if args.gzip or args.resume:
            raise Refused("--gzip and --resume write a file: name it with --output")
        return sys.stdout.buffer
    path: Path = args.output
    try:
        raw = files.enter_context(path.open("ab" if args.resume else "xb"))
    except FileExistsError:
        raise Refused(
            f"{args.output} exists: carry it on with --resume, or name another file"
        ) from None
    if args.gzip:
        packed = gzip.GzipFile(fileobj=raw, mode="ab", compresslevel=6)
        files.callback(packed.close)
        return cast(IO[bytes], packed)
    return raw


def _resume_point(args: argparse.Namespace) -> Position | None:
    """The position of the last whole line of --output; a partial line after it is cut off."""
    if not args.resume:
        return None
    if args.output is None or not args.output.exists():
        return None
    last = b""
    whole = 0
    with args.output.open("r+b") as existing:
        for line in existing:
            if line.endswith(b"\n"):
                last, whole = line, whole + len(line)
        existing.truncate(whole)
    if not last:
        return None
    try:
        event = json.loads(last)
        occurred_at = parse_rfc3339(event["occurred_at"])
        assert occurred_at is not None
        return Position(event["model"], occurred_at, event["event_id"], event["tenant"])
    except (ValueError, KeyError, TypeError, AssertionError):
        raise Refused(f"the last line of {args.output} is not an exported event") from None
