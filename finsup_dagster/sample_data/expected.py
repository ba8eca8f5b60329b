"""The documented rules a sample's expected outcomes come from, in plain Python, in one place.

``generate.py`` plans what it writes and asks these rules what the ledger and the
reconciliation should make of it. The property tests write their revenue's
canonical spelling with ``revenue_record`` too (tests/helpers/revenue_events.py),
so an event reads the same to both. Their model of the books (balances,
netting, holds: tests/helpers/money_model.py) is not here: the sample computes
none of that.

- ``revenue_record``: an event as a revenue file writes it, in the canonical
  spelling: the fields of ``revenue.FIELDS``, the amount a decimal string in
  the currency's exponent, the instant in ISO 8601.
- ``event_outcome``: what a run on ``run`` reports for a revenue event
  (docs/reconciliation.md, "Exceptions"): its settlement's outcome once the
  line has landed; before that, awaiting settlement while it is at most
  ``match_window_days`` old, then ``unmatched_revenue``, or
  ``stale_projected`` for a projected event older than ``stale_after_days``.
- ``batch_outcome``: a batch credit is ``balanced`` when its lines net of fees
  add up to the entry, else ``amount_mismatch`` (tolerance 0).
- ``day_counts``: what a run for a day reports: matches made that day and in
  all, events awaiting settlement and the open exceptions by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from finsup_dagster.ledger.money import format_minor

# The dbt defaults the expectations assume (dbt_project.yml vars).
AMOUNT_TOLERANCE_MINOR = 0
MATCH_WINDOW_DAYS = 3
STALE_AFTER_DAYS = 7

AWAITING = "awaiting_settlement"
REVENUE_EXCEPTIONS = ("unmatched_revenue", "stale_projected")


def revenue_record(
    *,
    source: str,
    external_id: str,
    amount_minor: int,
    currency: str,
    occurred_at: datetime,
    kind: str,
    status: str,
) -> dict[str, str]:
    """The canonical spelling of one revenue event (the keys of ``revenue.FIELDS``)."""
    return {
        "source": source,
        "external_id": external_id,
        "amount": format_minor(amount_minor, currency),
        "currency": currency,
        "occurred_at": occurred_at.isoformat(),
        "kind": kind,
        "status": status,
    }


def event_outcome(settled: str | None, age_days: int, status: str) -> str:
    """A revenue event's outcome in a run ``age_days`` after it occurred.

    ``settled`` is the outcome of the line that settles it, if that line has landed
    by the run; ``status`` is the event's status (projected or confirmed).
    """
    if settled is not None:
        return settled
    if age_days <= MATCH_WINDOW_DAYS:
        return AWAITING
    if status == "projected" and age_days > STALE_AFTER_DAYS:
        return "stale_projected"
    return "unmatched_revenue"


def batch_outcome(entry_net_minor: int, lines_net_minor: int) -> str:
    """A batch credit against its lines net of fees."""
    if abs(entry_net_minor - lines_net_minor) > AMOUNT_TOLERANCE_MINOR:
        return "amount_mismatch"
    return "balanced"


def day_counts(
    day: str, events: Mapping[str, Any], lines: Mapping[str, Any], batches: Mapping[str, Any]
) -> dict[str, Any]:
    """What a run for ``day`` reports: matches (made that day and in all), open items by kind.

    ``events``, ``lines`` and ``batches`` are the manifest's entries (``by_day``
    outcomes; lines with ``settled_on``). ``batch_amount_mismatch`` is the
    exceptions row of kind ``batch`` (exception_kind ``amount_mismatch``);
    reconciliation_summary counts it under ``amount_mismatch``.
    """
    matched = [v["settled_on"] for v in lines.values() if v["outcome"].startswith("matched:")]
    exceptions: Counter[str] = Counter()
    awaiting = 0
    for v in events.values():
        outcome = v["by_day"].get(day)
        if outcome == AWAITING:
            awaiting += 1
        elif outcome in REVENUE_EXCEPTIONS:
            exceptions[outcome] += 1
    for v in lines.values():
        outcome = v["by_day"].get(day)
        if outcome is not None and not outcome.startswith(("matched:", "ignored:")):
            exceptions[outcome] += 1
    for v in batches.values():
        if v["by_day"].get(day) == "amount_mismatch":
            exceptions["batch_amount_mismatch"] += 1
    return {
        "matched_today": sum(1 for settled_on in matched if settled_on == day),
        "matched_total": sum(1 for settled_on in matched if settled_on <= day),
        "awaiting_settlement": awaiting,
        "exceptions": dict(sorted(exceptions.items())),
    }
