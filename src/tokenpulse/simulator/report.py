"""The final report of a run: what was sent, and the ledger's totals, their cost, milestone
crossings and budget notifications next to the server's."""

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from tokenpulse.decimals import EXACT
from tokenpulse.instants import format_rfc3339
from tokenpulse.simulator.budgets import BudgetCrossing, Sum, amount_text, percent_text
from tokenpulse.simulator.check import Checks, MilestoneCheck, TotalsCheck
from tokenpulse.simulator.launchday import LaunchDay
from tokenpulse.simulator.ledger import MEASURES, Crossing, Ledger
from tokenpulse.simulator.notifications import BudgetCheck, ThresholdCheck
from tokenpulse.simulator.retries import Traffic

MAX_REJECTIONS_SHOWN = 5


def render_report(
    day: LaunchDay,
    ledger: Ledger,
    traffic: Traffic,
    seconds: float,
    checks: Checks,
    *,
    end: datetime | None = None,
    live: bool = False,
) -> str:
    """The report of a run whose events lie in [day.start, end), by default the day's end."""
    end = end or day.end
    if live:
        sent = ledger.acked + ledger.rejected
        latest = format_rfc3339(ledger.latest) if ledger.latest else "none answered"
        events = f"{sent:,} events from {format_rfc3339(day.start)}, the latest {latest}"
    else:
        events = f"{day.events:,} events from {format_rfc3339(day.start)} to {format_rfc3339(end)}"
    lines = [
        f"{'live launch' if live else 'launch day'}: seed {day.seed}, project {day.project}, "
        f"models {', '.join(day.models)}",
        f"  {events}, {day.tenants:,} tenants, {day.api_keys:,} api keys",
        f"sent in {seconds:.1f} s: {traffic.requests:,} requests ({traffic.retries:,} retried), "
        f"{traffic.bytes_sent / 1e6:,.1f} MB, {ledger.acked / seconds if seconds > 0 else 0:,.0f}"
        " events/s",
        f"  {ledger.accepted:,} accepted, {ledger.duplicates:,} duplicates, "
        f"{ledger.rejected:,} rejected",
    ]
    for rejection in ledger.rejections[:MAX_REJECTIONS_SHOWN]:
        reasons = "; ".join(f"{e['field']}: {e['message']}" for e in rejection["errors"])
        lines.append(f"    rejected {rejection['event_id']}: {reasons}")
    lines += ["", *_totals(day.start, end, checks), "", *_milestones(day.start, checks), ""]
    for budget in checks.budgets:
        lines += [*_budget(budget), ""]
    if checks.passed and not ledger.rejected:
        checked = ["totals", "their cost"] if checks.priced else ["totals"]
        checked.append("crossings")
        if checks.budgets:
            checked.append("budget notifications")
        listed = ", ".join(checked[:-1]) + " and " + checked[-1]
        lines.append(f"ledger check passed: the server's {listed} equal the ledger's")
    elif checks.passed:
        lines.append("ledger check FAILED: the server rejected events the simulator made")
    else:
        lines.append("ledger check FAILED: the server disagrees with the ledger (see ✗ above)")
        if any(check.ledger == check.server and not check.cost_matches for check in checks.totals):
            lines += [
                "  the tokens agree but not their cost: were the prices in effect during the run",
                "  changed behind it? GET /v1/prices?ended=true lists what was replaced, and when",
            ]
        if ledger.duplicates:
            lines += [
                "  some events were duplicates: if this seed ran before with other options or",
                "  another --start, the server holds that run's events; repeat that run exactly",
                "  (same options and --start), or choose another --seed",
            ]
    return "\n".join(lines)


def _totals(start: datetime, end: datetime, checks: Checks) -> list[str]:
    heading = f"totals in [{format_rfc3339(start)}, {format_rfc3339(end)})"
    if checks.totals_problem is not None:
        return [heading, f"  ✗ {checks.totals_problem}"]
    rows = [["model", "measure", "ledger", "server", ""]]
    notes = [] if checks.prices_problem is None else [f"  ✗ cost: {checks.prices_problem}"]
    for check in checks.totals:
        for number, measure in enumerate(MEASURES):
            ledger = check.ledger[measure] if check.ledger is not None else None
            server = check.server[measure] if check.server is not None else None
            rows.append(
                [
                    check.model if number == 0 else "",
                    measure,
                    _count(ledger),
                    _count(server),
                    "ok" if ledger == server else "✗",
                ]
            )
        if checks.priced:
            rows.append(_cost_row(check))
        if check.unchecked is not None:
            notes.append(f"  the cost of {check.model} is not checked: {check.unchecked.reason}")
    return [heading, *_table(rows, right={2, 3}), *notes]


def _cost_row(check: TotalsCheck) -> list[str]:
    """Cost beside the tokens: "unpriced" where nothing is, "-" where the model is not there."""
    if check.unchecked is not None:
        ledger, mark = "not checked", ""
    else:
        ledger = _cost(check.ledger_cost, present=check.ledger is not None)
        mark = "ok" if check.cost_matches else "✗"
    return ["", "cost", ledger, _cost(check.server_cost, present=check.server is not None), mark]


def _cost(cost: Decimal | None, *, present: bool) -> str:
    if not present:
        return "-"
    return "unpriced" if cost is None else format(cost.normalize(EXACT), ",f")


def _milestones(since: datetime, checks: Checks) -> list[str]:
    heading = f"milestones of total_tokens since {format_rfc3339(since)}"
    shown = [c for c in checks.milestones if c.predicted or c.reported or c.problem]
    unreached = sorted(
        {c.threshold for c in checks.milestones} - {c.threshold for c in shown},
    )
    rows = [["model", "threshold", "ledger predicts", "server reports", ""]]
    for check in shown:
        rows.append(
            [
                check.model,
                _threshold(check.threshold),
                _crossing(check.predicted),
                _reported(check),
                "ok" if check.matches else "✗",
            ]
        )
    lines = [heading, *(_table(rows) if shown else [])]
    if unreached:
        lines.append(f"  not reached: {', '.join(map(_threshold, unreached))}")
    return lines


def _crossing(crossing: Crossing | None) -> str:
    if crossing is None:
        return "not reached"
    return f"{format_rfc3339(crossing.crossed_at)} {crossing.event_id}"


def _reported(check: MilestoneCheck) -> str:
    if check.problem is not None:
        return check.problem
    if check.reported is None:
        return "not reached"
    return f"{format_rfc3339(check.reported.crossed_at)} {check.reported.event_id}"


def _budget(check: BudgetCheck) -> list[str]:
    """A budget's thresholds in each window: where the ledger predicts each is crossed, and the
    notification the server lists for it."""
    budget = check.budget
    watch = budget.watch
    lines = [f"budget {budget.id}: {budget.spec.describe()}, {watch.tenant} in {watch.project}"]
    rows = [["window from", "threshold", "ledger predicts", "server notifies", ""]]
    notes = []
    for start in dict.fromkeys(c.window.start for c in check.thresholds):
        in_window = [c for c in check.thresholds if c.window.start == start]
        if not any(c.expected for c in in_window):
            crossed = sum(1 for c in in_window if c.predicted is not None)
            notes.append(
                f"  the window from {format_rfc3339(start)} ended before the budget was made: "
                f"counted, never notified ({crossed} crossed in the ledger)"
            )
        shown = [c for c in in_window if c.notified or (c.expected and c.predicted is not None)]
        rows += [_threshold_row(c) for c in shown]
        unreached = [c for c in in_window if c.expected and c not in shown]
        if unreached:
            names = ", ".join(_threshold_name(c) for c in unreached)
            notes.append(f"  not reached from {format_rfc3339(start)}: {names}")
    if not check.thresholds:
        notes.append(f"  none of the ledger's events is {watch.tenant}'s: nothing to notify")
    lines += [*(_table(rows) if len(rows) > 1 else []), *notes]
    if check.problem is not None:
        lines.append(f"  ✗ {check.problem}")
    return lines


def _threshold_row(check: ThresholdCheck) -> list[str]:
    predicted = (
        _budget_crossing(check.predicted)
        if check.expected
        else "none: the window ended before the budget"
    )
    return [
        format_rfc3339(check.window.start),
        _threshold_name(check),
        predicted,
        _notified(check),
        "ok" if check.matches else "✗",
    ]


def _threshold_name(check: ThresholdCheck) -> str:
    threshold = check.threshold
    return f"{percent_text(threshold.percent)} ({amount_text(threshold.amount)})"


def _budget_crossing(crossing: BudgetCrossing | None) -> str:
    if crossing is None:
        return "not reached"
    return _at(crossing.crossed_at, crossing.event_id, crossing.value)


def _notified(check: ThresholdCheck) -> str:
    if not check.notified:
        return "not notified"
    if len(check.notified) > 1:
        return f"notified {len(check.notified)} times"
    [notified] = check.notified
    text = _at(notified.crossed_at, notified.event_id, notified.value)
    if notified.window != check.window:
        until = (
            "without end" if notified.window.end is None else format_rfc3339(notified.window.end)
        )
        text += f", its window ending {until}"
    if check.predicted is not None and notified.percent != check.predicted.threshold.percent:
        text += f", as {percent_text(notified.percent)}"
    return text


def _at(crossed_at: datetime, event_id: str, value: Sum) -> str:
    return f"{format_rfc3339(crossed_at)} {event_id} at {amount_text(value)}"


def _threshold(threshold: int) -> str:
    """10^9 rather than 1,000,000,000 when it is a power of ten."""
    text = str(threshold)
    if text.startswith("1") and set(text[1:]) <= {"0"} and len(text) > 3:
        return f"10^{len(text) - 1}"
    return f"{threshold:,}"


def _count(count: int | None) -> str:
    return "-" if count is None else f"{count:,}"


def _table(rows: Sequence[Sequence[str]], right: set[int] | None = None) -> list[str]:
    """Rows in columns two spaces apart, indented; the `right` columns aligned right."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in (right or set()) else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
