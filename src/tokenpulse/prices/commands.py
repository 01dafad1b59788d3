"""`tokenpulse prices list|set|import`: price versions managed in the database directly."""

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from tokenpulse.errors import InvalidParameters
from tokenpulse.instant_input import instant
from tokenpulse.model_names import model_problem
from tokenpulse.prices.files import read_price_file
from tokenpulse.prices.rules import PARTS, Prices, checked_prices, effective_from_problem
from tokenpulse.prices.store import (
    OtherPricesInEffect,
    Outcome,
    analyze_prices,
    list_prices,
    put_price,
)
from tokenpulse.terminal import listing_row, printable

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]

LISTED = ("id", "model", "effective_from", *PARTS, "created_at", "ended_at")


class Refused(Exception):
    """What stops the command, in one line (exit status 2)."""


def add_arguments(prices: argparse.ArgumentParser) -> None:
    actions = prices.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list the price versions in effect")
    listing.add_argument("--ended", action="store_true", help="also those replaced or withdrawn")
    put = actions.add_parser("set", help="put a model's prices in effect from a minute")
    put.add_argument("model")
    _effective_from(put)
    for part in PARTS:
        required = part in ("input", "output")
        put.add_argument(
            f"--{part.replace('_', '-')}",
            dest=part,
            required=required,
            help=f"per million tokens{'' if required else ' (optional)'}",
        )
    put.add_argument("--replace", action="store_true", help=_REPLACE)
    read = actions.add_parser(
        "import", help="put the prices of a LiteLLM price file or a CSV in effect from a minute"
    )
    read.add_argument("file", type=Path)
    read.add_argument(
        "--format",
        choices=("litellm", "csv"),
        help="litellm: model_prices_and_context_window.json; csv: a header naming model, input, "
        "output and optionally cached_input, cache_write_input, reasoning, effective_from, per "
        "million tokens (default: litellm for a .json file, else csv)",
    )
    _effective_from(read)
    read.add_argument(
        "--model", action="append", dest="models", help="only this model (may be repeated)"
    )
    read.add_argument("--replace", action="store_true", help=_REPLACE)


_REPLACE = "replace other prices in effect from the same minute (otherwise: refused)"


def _effective_from(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="effective_from",
        required=True,
        help="the whole minute the prices apply from, RFC 3339 with an offset",
    )


async def run(args: argparse.Namespace, transaction: Transaction, currency: str) -> int:
    try:
        if args.action == "list":
            return await _list(args, transaction)
        if args.action == "set":
            return await _set(args, transaction, currency)
        return await _import(args, transaction)
    except Refused as refused:
        print(f"tokenpulse: {refused}", file=sys.stderr)
        return 2


async def _list(args: argparse.Namespace, transaction: Transaction) -> int:
    async with transaction() as connection:
        versions = await list_prices(connection, ended=args.ended)
    print("\t".join(LISTED))
    for version in versions:
        answer = version.as_json("")
        row = {**answer, **answer["per_million_tokens"]}
        print(listing_row(str(row[column] or "") for column in LISTED))
    return 0


async def _set(args: argparse.Namespace, transaction: Transaction, currency: str) -> int:
    if (problem := model_problem(args.model)) is not None:
        raise Refused(f"the model name {problem}")
    effective_from = _minute(args.effective_from)
    given = {part: getattr(args, part) for part in PARTS if getattr(args, part) is not None}
    prices = checked_prices(given, field=None)
    if not isinstance(prices, Prices):
        raise Refused("; ".join(f"--{_option(p.field)} {p.message}" for p in prices))
    try:
        async with transaction() as connection:
            version, outcome, _ = await put_price(
                connection, args.model, effective_from, prices, replace=args.replace
            )
            if outcome is not Outcome.UNCHANGED:
                await analyze_prices(connection)
    except OtherPricesInEffect as conflict:
        raise Refused(
            f"version {conflict.version.id} of {printable(args.model)}'s prices is in effect "
            f"from that minute with other prices; add --replace to replace it"
        ) from None
    at = version.as_json(currency)["effective_from"]
    print(
        f"{outcome.value} version {version.id} of {printable(args.model)}'s prices, in {currency} "
        f"from {at}",
        file=sys.stderr,
    )
    return 0


async def _import(args: argparse.Namespace, transaction: Transaction) -> int:
    effective_from = _minute(args.effective_from)
    kind = args.format or ("litellm" if args.file.suffix == ".json" else "csv")
    try:
        entries, skipped = read_price_file(args.file.read_text(encoding="utf-8-sig"), kind)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise Refused(f"{args.file}: {error}") from None
    if args.models is not None:
        wanted = set(args.models)
        entries = [entry for entry in entries if entry.model in wanted]
        skipped = [skip for skip in skipped if skip.where in wanted]
        if unknown := wanted - {entry.model for entry in entries} - {s.where for s in skipped}:
            raise Refused(f"{args.file} has no model {', '.join(sorted(map(printable, unknown)))}")
    for skip in skipped:
        print(f"skipped {printable(skip.where)}: {skip.reason}", file=sys.stderr)
    outcomes: Counter[Outcome] = Counter()
    try:
        # All or nothing: a conflict part way leaves every version as it was.
        async with transaction() as connection:
            for entry in entries:
                minute = entry.effective_from or effective_from
                if (problem := effective_from_problem(minute)) is not None:
                    raise Refused(f"{printable(entry.model)}: effective_from {problem}")
                _, outcome, _ = await put_price(
                    connection, entry.model, minute, entry.prices, replace=args.replace
                )
                outcomes[outcome] += 1
            if outcomes.keys() - {Outcome.UNCHANGED}:
                await analyze_prices(connection)
    except OtherPricesInEffect as conflict:
        raise Refused(
            f"version {conflict.version.id} of {printable(conflict.version.model)}'s prices is in "
            "effect from that minute with other prices; nothing was imported; add --replace to "
            "replace such versions"
        ) from None
    print(
        ", ".join(f"{outcomes[outcome]} {outcome.value}" for outcome in Outcome)
        + f", {len(skipped)} skipped",
        file=sys.stderr,
    )
    return 0 if entries or not skipped else 1


def _option(part: str | None) -> str:
    return (part or "").replace("_", "-")


def _minute(text: str) -> datetime:
    try:
        effective_from = instant("--from", text)
    except InvalidParameters as invalid:
        raise Refused(invalid.message) from None
    assert effective_from is not None
    if (problem := effective_from_problem(effective_from)) is not None:
        raise Refused(f"--from {problem}")
    return effective_from
