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
- ``match_night``: the two matching rules (docs/reconciliation.md, "Matching
  rules, in order") for one run over the items no earlier run matched; the
  sample's matches come from it, and tests/test_matching_rules.py holds the dbt
  model to it on random books. ``shown_rule`` is the rule the marts show.
- ``batch_outcome``: a batch credit is ``balanced`` when its lines net of fees
  add up to the entry, else ``amount_mismatch`` (tolerance 0).
- ``day_counts``: what a run for a day reports: matches made that day and in
  all, events awaiting settlement and the open exceptions by kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from finsup_dagster.ledger.money import format_minor

# The dbt defaults the expectations assume (dbt_project.yml vars).
AMOUNT_TOLERANCE_MINOR = 0
MATCH_WINDOW_DAYS = 3
STALE_AFTER_DAYS = 7

MATCHED_KINDS = ("sale", "refund", "chargeback")  # fees and `other` lines are never matched

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


@dataclass(frozen=True)
class MatchEvent:
    """A revenue event as the matching rules see it."""

    event_hash: str
    source: str
    external_id: str
    kind: str
    """Sale, refund or chargeback: any other kind takes no part."""
    amount_minor: int
    currency: str
    day: int
    """The day number it occurred on (UTC)."""
    occurred_at: str
    """Its canonical instant text: rule 2's tie-break between two events."""
    status: str


@dataclass(frozen=True)
class MatchLine:
    """A settlement line as the matching rules see it."""

    key: Hashable
    gateway: str | None
    """Who settled it; None where the file does not say (a bank statement)."""
    gateway_txn_id: str | None
    kind: str
    gross_minor: int
    currency: str
    day: int
    """The day number it settled on."""
    order: tuple[Hashable, ...]
    """Where it landed (landing day, file name, row): the earlier, the first."""


def match_night(
    events: Sequence[MatchEvent],
    lines: Sequence[MatchLine],
    night: int,
    *,
    tolerance: int = AMOUNT_TOLERANCE_MINOR,
    window: int = MATCH_WINDOW_DAYS,
) -> set[tuple[str, Hashable, str]]:
    """(event hash, line key, rule) the run for day ``night`` matches, read literally
    from the documented rules. ``events`` and ``lines`` are those no other night matched."""
    evs = [
        e for e in events if e.kind in MATCHED_KINDS and e.status != "reversed" and e.day <= night
    ]
    lns = [ln for ln in lines if ln.kind in MATCHED_KINDS and ln.day <= night]

    def close(e: MatchEvent, ln: MatchLine) -> bool:
        same = (ln.kind, ln.currency) == (e.kind, e.currency)
        return same and abs(ln.gross_minor - e.amount_minor) <= tolerance

    def same_gateway(e: MatchEvent, ln: MatchLine) -> bool:
        return ln.gateway is None or ln.gateway == e.source

    # 1. The line names the event: the earliest settled line, then the first landed;
    #    of two events for one line, the smaller event hash.
    by_id = [
        (e.event_hash, ln.key, (ln.day, *ln.order, str(ln.key)), (e.event_hash,))
        for e in evs
        for ln in lns
        if ln.gateway_txn_id == e.external_id and close(e, ln) and same_gateway(e, ln)
    ]
    rule1 = _mutual_best(by_id)
    taken = {event for event, _ in rule1}
    # 2. A line naming nothing, settled 0 to `window` days after the event: closest in
    #    days, then the earlier event, or the line first in rule 1's order.
    by_amount = [
        (
            e.event_hash,
            ln.key,
            (ln.day - e.day, *ln.order, str(ln.key)),
            (ln.day - e.day, e.occurred_at, e.event_hash),
        )
        for e in evs
        for ln in lns
        if ln.gateway_txn_id is None
        and e.event_hash not in taken
        and close(e, ln)
        and 0 <= ln.day - e.day <= window
        and same_gateway(e, ln)
    ]
    rule2 = _mutual_best(by_amount)
    return {(e, ln, "gateway_txn_id") for e, ln in rule1} | {
        (e, ln, "amount_date_window") for e, ln in rule2
    }


def _mutual_best(
    pairs: Sequence[tuple[str, Hashable, tuple[Any, ...], tuple[Any, ...]]],
) -> set[tuple[str, Hashable]]:
    """Pairs (event, line, event's order of lines, line's order of events) that are each
    other's first choice."""
    best_line: dict[str, tuple[Any, ...]] = {}
    best_event: dict[Hashable, tuple[Any, ...]] = {}
    for event, line, line_order, event_order in pairs:
        best_line[event] = min(best_line.get(event, line_order), line_order)
        best_event[line] = min(best_event.get(line, event_order), event_order)
    return {
        (event, line)
        for event, line, line_order, event_order in pairs
        if best_line[event] == line_order and best_event[line] == event_order
    }


def shown_rule(rule: str, batch_ref: str | None) -> str:
    """The rule reconciliation_matches shows: a line of a bank batch credit is matched by
    ``batch_reference`` whichever rule paired it."""
    return "batch_reference" if batch_ref is not None else rule


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
