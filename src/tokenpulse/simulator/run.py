"""`tokenpulse simulate`: send a seeded launch day to a tokenpulse server, then check that the
server's totals, their cost, its milestone crossings and the notifications of the budgets it was
given equal the ledger of what it acknowledged. With `--live`, the launch goes on in real time
past now until the run is stopped, and is checked then."""

import argparse
import asyncio
import math
import os
import signal
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import httpx

from tokenpulse.instants import floor_to, format_rfc3339, parse_rfc3339
from tokenpulse.simulator.budgets import COST, BadBudget, BudgetSpec, BudgetWatch, parse_budgets
from tokenpulse.simulator.check import check_server
from tokenpulse.simulator.launchday import MINUTE, LaunchDay, tenant_name
from tokenpulse.simulator.ledger import Ledger
from tokenpulse.simulator.notifications import (
    BudgetRefused,
    MadeBudget,
    check_notifications,
    set_budgets,
)
from tokenpulse.simulator.pacing import RateCap, SimulatedClock, due_batches
from tokenpulse.simulator.prices import (
    Prices,
    PricesRefused,
    PricesUnreadable,
    register_prices,
    table_prices,
)
from tokenpulse.simulator.progress import ProgressLine
from tokenpulse.simulator.report import render_report
from tokenpulse.simulator.retries import GaveUp, Traffic, describe, request_until_answered
from tokenpulse.simulator.sender import Delivery, DeliveryFailed, deliver

DEFAULT_THRESHOLDS = "10^9,10^10,10^11,10^12"
MAX_BATCH = 10_000
PASSED, MISMATCH, UNUSABLE, INTERRUPTED = 0, 1, 2, 130


class Unusable(Exception):
    """The run cannot go on: bad options, or a server that cannot be reached or used."""


@dataclass(frozen=True)
class Plan:
    day: LaunchDay
    url: str
    key: str
    admin_key: str
    read_key: str
    thresholds: list[int]
    speedup: float
    rate: float
    batch: int
    delivery: Delivery
    timeout: float
    launch: bool
    prices: dict[str, Prices] | None
    """What each model is priced at from the launch on, registered before sending; None: the
    server's own prices, whatever they are."""
    quiet: bool
    live: bool
    budgets: list[BudgetSpec]
    budget_tenant: str
    """Whose usage the budgets watch."""
    budget_wait: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="the tokenpulse server (default: %(default)s)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("TOKENPULSE_KEY"),
        help="an ingest or admin key (default: $TOKENPULSE_KEY)",
    )
    parser.add_argument(
        "--admin-key",
        help="registers launches, prices and budgets and lists notifications (default: --key)",
    )
    parser.add_argument(
        "--read-key", help="reads totals and prices (default: --admin-key, else --key)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="its events go to project sim-SEED (default: 1)"
    )
    parser.add_argument(
        "--models", default="pulse-1", help="comma-separated model names (default: %(default)s)"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=200_000,
        help="events in the whole day, or with --live in its first --hours (default: 200,000)",
    )
    parser.add_argument(
        "--hours", type=float, default=24.0, help="the simulated day's length (default: 24)"
    )
    parser.add_argument(
        "--start", help="the launch instant, a whole minute (default: --hours before now)"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="go on past the day in real time, at the rate its curve gives, until Ctrl-C or "
        "SIGTERM; then check the ledger of everything sent",
    )
    parser.add_argument("--tenants", type=int, default=2000, help="tenants (default: 2000)")
    parser.add_argument(
        "--api-keys", type=int, default=20_000, help="api key ids in all (default: 20,000)"
    )
    parser.add_argument(
        "--speedup",
        type=float,
        help="simulated seconds per real second until now is reached, 0 for as fast as the "
        "server takes them (default: 3600, with --live 0)",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events per second at most (default: 0, no cap)"
    )
    parser.add_argument(
        "--batch", type=int, default=1000, help="events per request (default: 1000)"
    )
    parser.add_argument("--format", choices=["json", "ndjson"], default="json")
    parser.add_argument("--gzip", action="store_true", help="gzip request bodies")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="requests in flight (default: 4)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default: 30)"
    )
    parser.add_argument(
        "--give-up",
        type=float,
        default=120.0,
        help="seconds one batch may keep failing (default: 120)",
    )
    parser.add_argument(
        "--thresholds",
        default=DEFAULT_THRESHOLDS,
        help="total_tokens milestones to check (default: %(default)s)",
    )
    parser.add_argument(
        "--launch", action="store_true", help="register each model's launch at --start"
    )
    parser.add_argument(
        "--prices",
        action="store_true",
        help="register each model's prices from --start (a flagship's, or a mini's for a name "
        "ending in -mini) and check the cost at them",
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="METRIC:LIMIT:WINDOW[:PERCENTS]",
        help="set a budget on --budget-tenant's usage in the run's project before sending, and "
        "check that each threshold is notified once, at the crossing the ledger predicts: "
        "METRIC a measure or cost (with --prices), WINDOW day, week or month (UTC, or as "
        "day@Europe/Berlin) or since (the launch), PERCENTS such as 50,80,100 (the default); "
        "repeatable (needs an admin key)",
    )
    parser.add_argument(
        "--budget-tenant",
        metavar="TENANT",
        help="whose usage --budget watches (default: the largest tenant)",
    )
    parser.add_argument(
        "--budget-wait",
        type=float,
        metavar="SECONDS",
        default=60.0,
        help="seconds to wait after the run for the budget notifications (default: 60)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def simulate(args: argparse.Namespace) -> int:
    """The command: 0 when the server agrees with the ledger, 1 when not, 2 when it cannot run."""
    try:
        plan = _plan(args, now=datetime.now(UTC))
        return asyncio.run(_run(plan))
    except Unusable as exc:
        print(f"tokenpulse simulate: {exc}", file=sys.stderr)
        return UNUSABLE
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ntokenpulse simulate: interrupted", file=sys.stderr)
        return INTERRUPTED


def _plan(args: argparse.Namespace, *, now: datetime) -> Plan:
    """What to run, from the command's options."""
    if not args.key:
        raise Unusable("give a key with --key or TOKENPULSE_KEY")
    if args.speedup is None:
        args.speedup = 0.0 if args.live else 3600.0
    for name in ("hours", "speedup", "rate", "timeout", "give_up", "budget_wait"):
        if not math.isfinite(getattr(args, name)):
            raise Unusable(f"--{name.replace('_', '-')} must be a finite number")
    minutes = args.hours * 60
    if minutes < 1 or minutes != round(minutes):
        raise Unusable("--hours must be a whole number of minutes, at least one")
    duration = timedelta(minutes=round(minutes))
    if args.start is None:
        start = floor_to(now, MINUTE) - duration
    else:
        parsed = parse_rfc3339(args.start)
        if parsed is None:
            raise Unusable(f"--start is not an RFC 3339 instant: {args.start!r}")
        start = parsed
    models = [model.strip() for model in args.models.split(",") if model.strip()]
    for name, value, least in [
        ("--batch", args.batch, 1),
        ("--concurrency", args.concurrency, 1),
        ("--speedup", args.speedup, 0),
        ("--rate", args.rate, 0),
        ("--timeout", args.timeout, 0.001),
        ("--give-up", args.give_up, 0),
        ("--budget-wait", args.budget_wait, 0),
    ]:
        if value < least:
            raise Unusable(f"{name} must be at least {least}")
    if args.batch > MAX_BATCH:
        raise Unusable(f"--batch must be at most {MAX_BATCH:,}, the server's limit per request")
    try:
        day = LaunchDay(
            start=start,
            seed=args.seed,
            models=models,
            events=args.events,
            duration=duration,
            tenants=args.tenants,
            api_keys=args.api_keys,
        )
    except ValueError as exc:
        raise Unusable(str(exc)) from None
    try:
        budgets = parse_budgets(args.budget)
    except BadBudget as bad:
        raise Unusable(str(bad)) from None
    if not args.prices and (cost := next((b for b in budgets if b.metric == COST), None)):
        raise Unusable(
            f"--budget {cost.text}: a cost budget needs --prices, for the ledger to "
            "know what each event costs"
        )
    budget_tenant = args.budget_tenant or day.largest_tenant
    if not day.has_tenant(budget_tenant):
        raise Unusable(
            f"--budget-tenant: {budget_tenant!r} is not a simulated tenant: they are "
            f"{day.largest_tenant} (the largest) to {tenant_name(day.tenants, day.tenants)}"
        )
    admin_key = args.admin_key or args.key
    return Plan(
        day=day,
        url=args.url,
        key=args.key,
        admin_key=admin_key,
        read_key=args.read_key or admin_key,
        thresholds=_thresholds(args.thresholds),
        speedup=args.speedup,
        rate=args.rate,
        batch=args.batch,
        delivery=Delivery(
            format=args.format,
            gzip=args.gzip,
            concurrency=args.concurrency,
            give_up_seconds=args.give_up,
        ),
        timeout=args.timeout,
        launch=args.launch,
        prices={model: table_prices(model) for model in day.models} if args.prices else None,
        quiet=args.quiet,
        live=args.live,
        budgets=budgets,
        budget_tenant=budget_tenant,
        budget_wait=args.budget_wait,
    )


def _thresholds(text: str) -> list[int]:
    """Thresholds written as 1000000, 1_000_000, 1e6 or 10^6."""
    thresholds = []
    for part in text.split(","):
        written = part.strip().replace("_", "")
        if written.startswith("10^"):
            written = "1e" + written.removeprefix("10^")
        try:
            value = Decimal(written)
        except InvalidOperation:
            raise Unusable(f"--thresholds: {part.strip()!r} is not a number") from None
        if value != value.to_integral_value() or value < 1:
            raise Unusable(f"--thresholds: {part.strip()!r} is not a positive whole number")
        thresholds.append(int(value))
    return sorted(set(thresholds))


async def _run(plan: Plan) -> int:
    day = plan.day
    give_up = plan.delivery.give_up_seconds
    limits = httpx.Limits(max_connections=plan.delivery.concurrency)
    async with (
        httpx.AsyncClient(
            base_url=plan.url, timeout=plan.timeout, headers=_bearer(plan.key), limits=limits
        ) as ingest,
        # The ledger is checked against what was acknowledged: read-your-writes, never a replica.
        httpx.AsyncClient(
            base_url=plan.url,
            timeout=plan.timeout,
            headers={**_bearer(plan.read_key), "Tokenpulse-Consistency": "primary"},
        ) as reader,
        httpx.AsyncClient(
            base_url=plan.url, timeout=plan.timeout, headers=_bearer(plan.admin_key)
        ) as admin,
    ):
        try:
            await _prepare(reader, admin, plan)
            budgets = await set_budgets(admin, _watches(plan), give_up_seconds=give_up)
            ledger, traffic, seconds = await _send(ingest, plan, budgets)
            end = _sent_until(ledger, day) if plan.live else day.end
            checks = await check_server(
                reader,
                ledger,
                project=day.project,
                start=day.start,
                end=end,
                thresholds=plan.thresholds,
                give_up_seconds=give_up,
                prices=plan.prices,
            )
            if budgets:
                if not plan.quiet:
                    print(
                        f"waiting up to {plan.budget_wait:g} s for the budget notifications",
                        file=sys.stderr,
                    )
                notified = await check_notifications(
                    admin, budgets, wait_seconds=plan.budget_wait, give_up_seconds=give_up
                )
                checks = replace(checks, budgets=notified)
        except (BudgetRefused, DeliveryFailed, GaveUp, PricesRefused, PricesUnreadable) as exc:
            raise Unusable(str(exc)) from None
        except httpx.TransportError as exc:
            raise Unusable(f"cannot reach {plan.url}: {type(exc).__name__} {exc}") from None
    print(render_report(day, ledger, traffic, seconds, checks, end=end, live=plan.live))
    return PASSED if checks.passed and not ledger.rejected else MISMATCH


def _watches(plan: Plan) -> list[BudgetWatch]:
    """The ledger's running sums of each budget: the tenant's usage in the run's project."""
    return [
        BudgetWatch(
            spec,
            tenant=plan.budget_tenant,
            project=plan.day.project,
            since=plan.day.start,
            prices=plan.prices,
        )
        for spec in plan.budgets
    ]


async def _send(
    ingest: httpx.AsyncClient, plan: Plan, budgets: list[MadeBudget]
) -> tuple[Ledger, Traffic, float]:
    """Send the day as its events fall due; the ledger of the answers, and how long it took."""
    day = plan.day
    if not plan.quiet:
        print(_sending(plan), file=sys.stderr)
    ledger = Ledger(
        since=day.start,
        thresholds=plan.thresholds,
        watches=[budget.watch for budget in budgets],
    )
    traffic = Traffic()
    progress = ProgressLine(
        ledger=ledger,
        traffic=traffic,
        events=None if plan.live else day.events,
        start=day.start,
    )

    def caught_up() -> None:
        progress.note(
            "caught up with now: every event due is on its way "
            f"({ledger.acked + ledger.rejected:,} answered so far), and from here on each goes "
            "as it falls due"
        )

    batches = due_batches(
        day.going_on() if plan.live else day,
        clock=SimulatedClock(day.start, plan.speedup),
        size=plan.batch,
        rate=RateCap(plan.rate),
        stop=_stopped_by_signals(progress) if plan.live else None,
        on_caught_up=caught_up if plan.live and not plan.quiet else None,
    )
    began = time.monotonic()
    showing = None if plan.quiet else asyncio.create_task(progress.show())
    try:
        await deliver(ingest, batches, ledger, plan.delivery, traffic)
    finally:
        if showing is not None:
            showing.cancel()
            with suppress(asyncio.CancelledError):
                await showing
            progress.finish()
    return ledger, traffic, time.monotonic() - began


def _sending(plan: Plan) -> str:
    day = plan.day
    where = f"of {', '.join(day.models)} in project {day.project}"
    if not plan.live:
        return (
            f"sending {day.events:,} events {where}, "
            f"{format_rfc3339(day.start)} to {format_rfc3339(day.end)}, to {plan.url}"
        )
    return (
        f"sending a launch {where} from {format_rfc3339(day.start)} to {plan.url}, "
        f"{day.events:,} events in its first {day.duration // MINUTE:,} minutes, then on in "
        "real time; Ctrl-C stops it and checks the ledger"
    )


def _stopped_by_signals(progress: ProgressLine) -> asyncio.Event:
    """An event set by the first SIGINT or SIGTERM, so that the run ends with its ledger check;
    a second one cancels the run outright."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    running = asyncio.current_task()

    def stopping(sig: signal.Signals) -> None:
        if stop.is_set():
            if running is not None:
                running.cancel()
            return
        stop.set()
        progress.note(
            f"{sig.name}: sending no more; the answers to what was sent, then the ledger check "
            "(once more to give up)"
        )

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping, sig)
    return stop


def _sent_until(ledger: Ledger, day: LaunchDay) -> datetime:
    """The end of the minute of the newest event acknowledged: no later one was sent."""
    if ledger.latest is None:
        return day.start + MINUTE
    return floor_to(ledger.latest, MINUTE) + MINUTE


async def _prepare(reader: httpx.AsyncClient, admin: httpx.AsyncClient, plan: Plan) -> None:
    """Fail before sending anything when the server is not there or the keys cannot do the job."""
    health = await reader.get("/healthz")
    if health.status_code != 200:
        raise Unusable(f"{plan.url}/healthz answered {health.status_code}: is it tokenpulse?")
    give_up = plan.delivery.give_up_seconds
    probe = await request_until_answered(
        reader,
        "GET",
        "/v1/totals",
        params={"window": "5m", "project": plan.day.project},
        give_up_seconds=give_up,
    )
    if probe.status_code != 200:
        raise Unusable(f"the read key cannot read totals: {describe(probe)}")
    if plan.launch:
        for model in plan.day.models:
            response = await request_until_answered(
                admin,
                "PUT",
                f"/v1/launches/{quote(model, safe='')}",
                json={"launched_at": format_rfc3339(plan.day.start)},
                give_up_seconds=give_up,
            )
            if response.status_code not in (200, 201):
                raise Unusable(f"registering the launch of {model}: {describe(response)}")
    if plan.prices is not None:
        for model, prices in plan.prices.items():
            await register_prices(
                admin,
                model,
                prices,
                start=plan.day.start,
                end=None if plan.live else plan.day.end,
                give_up_seconds=give_up,
            )


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
