"""A small, realistic, deterministic sample for the reconciliation pipeline.

``generate_sample(home, sandbox_dir)`` writes a few days of revenue and
settlement files into the landing zone (``home/landing/<format>/<YYYY-MM-DD>/``)
and appends the PayPal API's transactions to the sandbox data file
(``sandbox_dir/paypal_transactions.jsonl``). Everything comes from one seeded
``random.Random``: the same arguments give the same bytes.

Sources, and how each one's revenue is settled:

- ``paypal`` (USD, EUR): sales (T0006, status S; P for pending ones) and a refund
  (T1107) through the PayPal Transaction Search API (the sandbox); settled by
  PayPal's daily STL report a day later, same transaction ids, with fees.
- ``payoneer`` (USD, JPY): revenue CSV files; settled by finsup settlement CSVs
  (gateway ``payoneer``) one or two days later, with fees.
- ``appstore`` (EUR): revenue JSONL files; settled by the bank (camt.053) two
  days later as one batch credit per day (a ``TxDtls`` per sale, its
  ``EndToEndId`` the sale's id, net of Apple's commission).

On top of the daily traffic, one case of each thing reconciliation must handle
(see ``SCENARIOS``): a late settlement, a pending sale settled late, a refund per
gateway, a duplicate settlement, a currency and an amount mismatch, a batch
whose lines do not add up to the bank credit, a credit without any reference
(matched by amount and date), a settlement line nobody sold, a sale never
settled and a projected sale never settled. And broken deliveries: an STL whose
report footer disagrees with its body and a truncated camt.053 (both followed by
a good resend the same day, so they change no outcome), a revenue CSV with one
bad row (the file lands, the row is rejected) and a settlement CSV delivered
again, byte for byte, under another name two days later (landed once).

The manifest says what was written and what the reconciliation should report
for each event, settlement line and batch on each day, assuming the daily
partitions (UTC) run in order and the dbt defaults (tolerance 0, match window 3
days, stale after 7 days). The scenarios say which line settles which event and
how; what follows from that each day (awaiting, unmatched, stale, a batch's
balance, the day's counts) comes from the documented rules in ``expected.py``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

from finsup_dagster.formats import write_camt053, write_settlement_csv, write_stl
from finsup_dagster.formats.camt053 import allocate
from finsup_dagster.gateways.sandbox import (
    PAYPAL_ACCOUNT_NUMBER,
    PAYPAL_TRANSACTIONS_FILE,
    append_transactions,
    transaction_info,
)
from finsup_dagster.ledger.money import format_minor
from finsup_dagster.ledger.revenue import FIELDS, parse_event
from finsup_dagster.sample_data.expected import (
    MATCH_WINDOW_DAYS,
    STALE_AFTER_DAYS,
    MatchEvent,
    MatchLine,
    batch_outcome,
    day_counts,
    event_outcome,
    match_night,
    revenue_record,
    shown_rule,
)

MIN_DAYS = 4  # every scenario's files fall on days 0-3
ACCOUNT_IBAN = "DE89370400440532013000"
ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Price points in minor units.
USD_PRICES = (900, 1200, 1900, 2500, 2999, 4900, 7900, 9900, 14900)
EUR_PRICES = (800, 1500, 1990, 2900, 4500, 6900, 8900, 12900)
JPY_PRICES = (980, 1500, 2400, 3200, 4800, 9800, 15000)
APPSTORE_PRICES = (99, 299, 499, 999, 1499, 2999)

# Time zones the sources write in, and local hours that keep the UTC date.
_TZ = {
    "paypal": (0, 6, 21),  # the API reports UTC
    "USD": (-5, 6, 18),  # Payoneer US customers, New York
    "JPY": (9, 9, 20),  # Payoneer Japanese customers, Tokyo
    "appstore": (1, 7, 22),  # App Store Connect, Berlin (CET)
}

OUTCOMES = (
    "awaiting_settlement",
    "matched:gateway_txn_id",
    "matched:amount_date_window",
    "matched:batch_reference",
    "duplicate_settlement",
    "currency_mismatch",
    "amount_mismatch",
    "unmatched_revenue",
    "stale_projected",
    "unmatched_settlement",
    "ignored:other",
)

SCENARIOS: dict[str, str] = {
    "paypal_sale": "PayPal sale from the API, settled by the next day's STL (same id)",
    "paypal_refund": "PayPal refund (T1107) of a first-day sale, settled by the next day's STL",
    "paypal_pending_settled_late": "pending (P → projected) PayPal sale settled 2 days later",
    "paypal_projected_never_settled": (
        "first-day pending PayPal sale never settled: unmatched_revenue after 3 days, "
        "stale_projected after 7"
    ),
    "payoneer_sale": "Payoneer sale from a revenue CSV, settled 1-2 days later (settlement CSV)",
    "payoneer_late_settlement": "Payoneer sale settled 3 days later, matched by id",
    "payoneer_refund": "Payoneer refund of a second-day sale, settled the next day",
    "payoneer_duplicate": "Payoneer sale settled next day and settled again the day after",
    "payoneer_currency_mismatch": "JPY sale the settlement CSV settles in USD",
    "payoneer_amount_mismatch": "USD sale settled for less than it was sold for",
    "payoneer_never_settled": "Payoneer JPY sale no settlement ever names",
    "payoneer_unknown_settlement": "settlement line whose transaction id names no revenue",
    "payoneer_bad_row": "revenue CSV row with amount 12.345 USD: rejected, the file lands",
    "appstore_sale": "App Store sale (JSONL), settled 2 days later in a camt.053 batch credit",
    "appstore_batch_short": (
        "camt.053 batch credit 0.50 EUR short of its lines net of fees: batch amount_mismatch, "
        "the lines still match"
    ),
    "appstore_batch_booking": (
        "camt.053 batch booking whose details all repeat the entry's reference, the bank's "
        "charges stated once for the entry: shared over the lines as their fees, no mismatch"
    ),
    "paypal_stl_repeated_row": (
        "an STL listing one sale's transaction twice: the file lands, the first row settles "
        "the sale, the second is a duplicate_settlement"
    ),
    "appstore_no_reference": (
        "App Store sale settled 3 days later by a bank credit without reference (amount/date)"
    ),
    "bank_charge": "monthly account charge in the camt.053: kind other, not reconciled",
}


@dataclass(frozen=True)
class BrokenFile:
    """A file landing must quarantine: ``error`` is the exception class, ``reason`` in its message."""

    path: Path
    fmt: str
    day: str
    error: str
    reason: str


@dataclass(frozen=True)
class Redelivery:
    """A file delivered again with the same bytes under another name: landing skips it."""

    path: Path
    original: Path
    fmt: str
    day: str


@dataclass(frozen=True)
class RejectedRow:
    """A row of a landed revenue file that the ledger refuses (row-level reject)."""

    path: Path
    row_number: int
    external_id: str
    reason: str


@dataclass
class SampleManifest:
    """What ``generate_sample`` wrote and what reconciliation should make of it.

    ``files`` are the landing-zone files (broken and redelivered ones included);
    the PayPal API's transactions are in ``sandbox_file`` (appended). ``expected``
    is plain data (JSON-able): ``scenarios`` (per scenario its ids and outcome),
    ``events`` (per external_id), ``lines`` (per ``<format>:<record_ref>``),
    ``batches`` (per batch ref), each with ``outcome`` on the last day and
    ``by_day``; and ``by_day``, the counts a run for each day should report.
    """

    home: Path
    sandbox_dir: Path
    days: list[str]
    files: list[Path]
    broken_files: list[BrokenFile]
    redelivered: list[Redelivery]
    rejected_rows: list[RejectedRow]
    sandbox_file: Path
    paypal_transactions: int
    expected: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        def rel(path: Path) -> str:
            return path.relative_to(self.home).as_posix()

        return {
            "days": self.days,
            "files": [rel(p) for p in self.files],
            "broken_files": [
                {
                    "path": rel(b.path),
                    "format": b.fmt,
                    "day": b.day,
                    "error": b.error,
                    "reason": b.reason,
                }
                for b in self.broken_files
            ],
            "redelivered": [
                {"path": rel(r.path), "original": rel(r.original), "format": r.fmt, "day": r.day}
                for r in self.redelivered
            ],
            "rejected_rows": [
                {
                    "path": rel(r.path),
                    "row_number": r.row_number,
                    "external_id": r.external_id,
                    "reason": r.reason,
                }
                for r in self.rejected_rows
            ],
            "sandbox_file": str(self.sandbox_file),
            "paypal_transactions": self.paypal_transactions,
            "expected": self.expected,
        }


# --------------------------------------------------------------------------- model


@dataclass
class _Event:
    source: str
    external_id: str
    kind: str
    amount_minor: int
    currency: str
    at: datetime
    day: int
    scenario: str
    status: str = "confirmed"
    reference_id: str | None = None  # the sale a refund refunds
    fee_minor: int = 0  # what the settler will charge, positive
    settlement: _Line | None = None  # the line that settles (or mismatches) it
    outcome: str | None = None  # that line's outcome for this event

    @property
    def occurred_at(self) -> str:
        return self.at.isoformat()


@dataclass
class _Line:
    fmt: str
    record_ref: str  # the line id the parser gives the row (unique in its file)
    gateway_txn_id: str | None
    kind: str
    gross_minor: int
    currency: str
    fee_minor: int
    day: int  # settled on
    scenario: str
    # Declared only for a line the plan means to be an exception; a match (and its
    # rule) is the documented matching rules' to find (_apply_matching_rules).
    outcome: str | None
    occurred_at: str | None = None
    batch_ref: str | None = None
    batch_net_minor: int | None = None
    event_code: str | None = None
    description: str | None = None
    event: _Event | None = None
    settler_ref: str | None = None  # the settler's reference, when not the line id
    position: int = 0  # its row in its day's file (the rules' landing order)

    @property
    def direction(self) -> str:
        return "credit" if self.kind == "sale" else "debit"

    @property
    def key(self) -> str:
        return f"{self.fmt}:{self.record_ref}"

    def row(self, settled_on: str) -> dict[str, object]:
        return {
            "row_number": 0,
            "record_ref": self.record_ref,
            "settler_ref": self.settler_ref or self.record_ref,
            "gateway_txn_id": self.gateway_txn_id,
            "batch_ref": self.batch_ref,
            "batch_net_minor": self.batch_net_minor,
            "event_code": self.event_code,
            "kind": self.kind,
            "direction": self.direction,
            "gross_minor": self.gross_minor,
            "currency": self.currency,
            "fee_minor": self.fee_minor,
            "fee_currency": self.currency,
            "settled_on": settled_on,
            "occurred_at": self.occurred_at,
            "description": self.description,
            "raw": "",
        }


@dataclass
class _Batch:
    ref: str
    day: int
    lines: list[_Line]
    net_minor: int
    scenario: str

    @property
    def lines_net_minor(self) -> int:
        return sum(line.gross_minor - line.fee_minor for line in self.lines)


@dataclass
class _Plan:
    start: date
    days: int
    rng: random.Random
    events: list[_Event] = field(default_factory=list)
    lines: list[_Line] = field(default_factory=list)
    batches: list[_Batch] = field(default_factory=list)
    bad_rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (day, record)
    ids: set[str] = field(default_factory=set)
    seq: Counter[str] = field(default_factory=Counter)

    def day_text(self, day: int) -> str:
        return (self.start + timedelta(days=day)).isoformat()

    def compact(self, day: int) -> str:
        return self.day_text(day).replace("-", "")

    # -- ids, times, amounts -----------------------------------------------------------------
    def unique(self, make: Any) -> str:
        while True:
            value = str(make())
            if value not in self.ids:
                self.ids.add(value)
                return value

    def paypal_id(self) -> str:
        return self.unique(lambda: "".join(self.rng.choice(ID_ALPHABET) for _ in range(17)))

    def payoneer_id(self) -> str:
        return self.unique(lambda: f"PO-{self.rng.randrange(10**7, 10**8)}")

    def appstore_id(self) -> str:
        return self.unique(lambda: "MT" + "".join(self.rng.choice(ID_ALPHABET) for _ in range(8)))

    def next_ref(self, prefix: str) -> str:
        self.seq[prefix] += 1
        return f"{prefix}-{self.seq[prefix]:04d}"

    def at(self, day: int, zone: str) -> datetime:
        offset, first, last = _TZ[zone]
        local = time(
            self.rng.randint(first, last - 1), self.rng.randrange(60), self.rng.randrange(60)
        )
        tz = timezone(timedelta(hours=offset)) if offset else UTC
        return datetime.combine(self.start + timedelta(days=day), local, tz)

    # -- building blocks ---------------------------------------------------------------------
    def event(
        self,
        source: str,
        external_id: str,
        amount: int,
        currency: str,
        day: int,
        scenario: str,
        *,
        zone: str,
        kind: str = "sale",
        status: str = "confirmed",
        fee: int = 0,
        reference_id: str | None = None,
    ) -> _Event:
        ev = _Event(
            source,
            external_id,
            kind,
            amount,
            currency,
            self.at(day, zone),
            day,
            scenario,
            status=status,
            reference_id=reference_id,
            fee_minor=fee,
        )
        self.events.append(ev)
        return ev

    def settle(
        self,
        fmt: str,
        ev: _Event,
        day: int,
        *,
        outcome: str | None = None,
        record_ref: str | None = None,
        gross: int | None = None,
        currency: str | None = None,
        scenario: str | None = None,
        with_id: bool = True,
        event_code: str | None = None,
        description: str | None = None,
        batch_ref: str | None = None,
    ) -> _Line:
        line = _Line(
            fmt=fmt,
            record_ref=record_ref or ev.external_id,
            gateway_txn_id=ev.external_id if with_id else None,
            kind=ev.kind,
            gross_minor=ev.amount_minor if gross is None else gross,
            currency=currency or ev.currency,
            fee_minor=ev.fee_minor if with_id else 0,
            day=day,
            scenario=scenario or ev.scenario,
            outcome=outcome,
            occurred_at=None if fmt == "camt053" else ev.occurred_at,
            batch_ref=batch_ref,
            event_code=event_code,
            description=description,
            event=ev,
        )
        self.lines.append(line)
        if ev.settlement is None and outcome not in (None, "duplicate_settlement"):
            ev.settlement, ev.outcome = line, outcome  # the exception the event is part of
        return line


def _paypal_fee(amount: int) -> int:
    return (amount * 29 + 500) // 1000 + 30  # 2.9% + 0.30


def _payoneer_fee(amount: int, currency: str) -> int:
    return max(1 if currency == "JPY" else 25, (amount + 50) // 100)  # 1%, with a minimum


def _appstore_fee(amount: int) -> int:
    return (amount * 15 + 50) // 100  # small business commission, 15%


# --------------------------------------------------------------------------- the plan


def _plan(start: date, days: int, seed: int) -> _Plan:
    plan = _Plan(start, days, random.Random(seed))
    for day in range(days):
        _paypal_day(plan, day)
        _payoneer_day(plan, day)
        _appstore_day(plan, day)
    _bank_charge(plan)
    return plan


def _paypal_day(plan: _Plan, day: int) -> None:
    rng = plan.rng
    sales = []
    for _ in range(rng.randint(3, 5)):
        currency = rng.choice(("USD", "USD", "EUR"))
        amount = rng.choice(USD_PRICES if currency == "USD" else EUR_PRICES)
        ev = plan.event(
            "paypal",
            plan.paypal_id(),
            amount,
            currency,
            day,
            "paypal_sale",
            zone="paypal",
            fee=_paypal_fee(amount),
        )
        sales.append(ev)
        plan.settle("paypal-stl", ev, day + 1, event_code="T0006")
    if day == 0:
        # The same transaction listed twice in the next day's report (the generator
        # gives the repeat its line id when the file is written: "<id>#<line>").
        plan.settle(
            "paypal-stl",
            sales[0],
            day + 1,
            event_code="T0006",
            outcome="duplicate_settlement",
            scenario="paypal_stl_repeated_row",
        )
    if day == 0:
        amount = rng.choice(USD_PRICES)
        plan.event(
            "paypal",
            plan.paypal_id(),
            amount,
            "USD",
            day,
            "paypal_projected_never_settled",
            zone="paypal",
            status="projected",
            fee=_paypal_fee(amount),
        )
    if day == 1:
        amount = rng.choice(EUR_PRICES)
        ev = plan.event(
            "paypal",
            plan.paypal_id(),
            amount,
            "EUR",
            day,
            "paypal_pending_settled_late",
            zone="paypal",
            status="projected",
            fee=_paypal_fee(amount),
        )
        plan.settle("paypal-stl", ev, day + 2, event_code="T0006")
        first = next(e for e in plan.events if e.scenario == "paypal_sale" and e.day == 0)
        refund = plan.event(
            "paypal",
            plan.paypal_id(),
            first.amount_minor // 2,
            first.currency,
            day,
            "paypal_refund",
            zone="paypal",
            kind="refund",
            reference_id=first.external_id,
        )
        plan.settle("paypal-stl", refund, day + 1, event_code="T1107")


def _payoneer_day(plan: _Plan, day: int) -> None:
    rng = plan.rng

    def sale(currency: str, scenario: str, amount: int | None = None) -> _Event:
        prices = JPY_PRICES if currency == "JPY" else USD_PRICES
        value = amount if amount is not None else rng.choice(prices)
        return plan.event(
            "payoneer",
            plan.payoneer_id(),
            value,
            currency,
            day,
            scenario,
            zone=currency,
            fee=_payoneer_fee(value, currency),
        )

    def settle(ev: _Event, on: int, **kwargs: Any) -> _Line:
        ref = plan.next_ref(f"PSET-{plan.compact(on)}")
        return plan.settle("settlement-csv", ev, on, record_ref=ref, **kwargs)

    for _ in range(rng.randint(3, 4)):
        ev = sale(rng.choice(("USD", "JPY")), "payoneer_sale")
        settle(ev, day + rng.choice((1, 2)), description="Payoneer checkout")
    if day == 0:
        sale("JPY", "payoneer_never_settled")
        late = sale("USD", "payoneer_late_settlement")
        settle(late, day + 3, description="Payoneer checkout (delayed review)")
        dup = sale("USD", "payoneer_duplicate")
        settle(dup, day + 1, description="Payoneer checkout")
        settle(
            dup,
            day + 2,
            outcome="duplicate_settlement",
            description="Payoneer checkout (settled again)",
        )
    if day == 1:
        # (sold, scenario, amount; settled as: exception, gross, currency, description)
        mismatches = (
            ("JPY", "payoneer_currency_mismatch", 4000, "currency_mismatch", 2667, "USD",
             "Payoneer checkout (converted to USD)"),
            ("USD", "payoneer_amount_mismatch", 8000, "amount_mismatch", 7850, "USD",
             "Payoneer checkout (partial capture)"),
        )  # fmt: skip
        for sold_in, scenario, amount, outcome, gross, paid_in, description in mismatches:
            settle(
                sale(sold_in, scenario, amount),
                day + 1,
                outcome=outcome,
                gross=gross,
                currency=paid_in,
                description=description,
            )
        record = revenue_record(
            source="payoneer",
            external_id=plan.payoneer_id(),
            amount_minor=1234,
            currency="USD",
            occurred_at=plan.at(day, "USD"),
            kind="sale",
            status="confirmed",
        )
        plan.bad_rows.append((day, record | {"amount": "12.345"}))  # a cent and a half: refused
    if day == 2:
        sold = next(e for e in plan.events if e.scenario == "payoneer_sale" and e.day == 1)
        refund = plan.event(
            "payoneer",
            f"{sold.external_id}-R1",
            sold.amount_minor,
            sold.currency,
            day,
            "payoneer_refund",
            zone=sold.currency,
            kind="refund",
            reference_id=sold.external_id,
        )
        plan.ids.add(refund.external_id)
        settle(refund, day + 1, description=f"Refund of {sold.external_id}")
        ghost = _Event(
            "payoneer",
            plan.payoneer_id(),
            "sale",
            rng.choice(USD_PRICES),
            "USD",
            plan.at(day - 1, "USD"),
            day - 1,
            "payoneer_unknown_settlement",
        )
        ghost.fee_minor = _payoneer_fee(ghost.amount_minor, "USD")
        line = settle(ghost, day, outcome="unmatched_settlement", description="Payoneer checkout")
        line.event = None  # no revenue event exists for it


def _appstore_day(plan: _Plan, day: int) -> None:
    rng = plan.rng
    sales = []
    for _ in range(rng.randint(3, 4)):
        amount = rng.choice(APPSTORE_PRICES) * rng.randint(1, 3)
        sales.append(
            plan.event(
                "appstore",
                plan.appstore_id(),
                amount,
                "EUR",
                day,
                "appstore_sale",
                zone="appstore",
                fee=_appstore_fee(amount),
            )
        )
    batch_ref = f"APPLE-{plan.compact(day)}"
    short = day == 1
    booking = day == 0  # details repeat the entry's reference; charges once, on the entry
    lines = [
        plan.settle(
            "camt053",
            ev,
            day + 2,
            record_ref=f"{batch_ref}/{n}",
            batch_ref=batch_ref,
            event_code="PMNT/RCDT/ESCT",
            description=f"App Store proceeds {ev.external_id}",
        )
        for n, ev in enumerate(sales, 1)
    ]
    for n, line in enumerate(lines, 1):
        line.settler_ref = batch_ref if booking else f"{batch_ref}-{n:02d}"
    if booking:  # what the parser makes of the entry's charge: shares of it
        total = sum(line.fee_minor for line in lines)
        for line, share in zip(lines, allocate(total, [x.gross_minor for x in lines]), strict=True):
            line.fee_minor = share
    net = sum(line.gross_minor - line.fee_minor for line in lines) - (50 if short else 0)
    for line in lines:
        line.batch_net_minor = net
    scenario = "appstore_batch_short" if short else "appstore_sale"
    plan.batches.append(
        _Batch(batch_ref, day + 2, lines, net, "appstore_batch_booking" if booking else scenario)
    )
    if day == 0:
        amount = _unique_eur_amount(plan)
        ev = plan.event(
            "appstore",
            plan.appstore_id(),
            amount,
            "EUR",
            day,
            "appstore_no_reference",
            zone="appstore",
        )
        plan.settle(
            "camt053",
            ev,
            day + 3,
            record_ref=f"BANK-{plan.compact(day + 3)}-0001",
            with_id=False,
            event_code="PMNT/RCDT/ESCT",
            description="APPLE DISTRIBUTION INTL / PROCEEDS",
        )


def _unique_eur_amount(plan: _Plan) -> int:
    """An amount no other EUR sale has, so the credit without reference has one candidate."""
    taken = {e.amount_minor for e in plan.events if e.currency == "EUR"}
    taken |= {p * q for p in APPSTORE_PRICES for q in (1, 2, 3)} | set(EUR_PRICES)
    while True:
        amount = plan.rng.randrange(3000, 9000)
        if amount not in taken:
            return amount


def _bank_charge(plan: _Plan) -> None:
    plan.lines.append(
        _Line(
            fmt="camt053",
            record_ref=f"BANK-{plan.compact(1)}-0001",
            gateway_txn_id=None,
            kind="other",
            gross_minor=990,
            currency="EUR",
            fee_minor=0,
            day=1,
            scenario="bank_charge",
            outcome="ignored:other",
            event_code="ACMT/MDOP/CHRG",
            description="Account maintenance fee",
        )
    )


# --------------------------------------------------------------------------- expectations


# Who settles each format's lines, as its parser says (a bank statement does not say).
_GATEWAY = {"paypal-stl": "paypal", "settlement-csv": "payoneer", "camt053": None}


def _apply_matching_rules(plan: _Plan, lines: list[_Line]) -> _Plan:
    """Each landed line's match, night after night, by the documented matching rules
    (expected.match_night), not by what the plan meant: a line the plan declares no
    exception for must match the event it was written for, and a declared exception
    must stay unmatched, or the plan and the rules disagree and nothing is written."""
    events: dict[str, _Event] = {}  # by canonical event hash
    match_events = []
    for ev in plan.events:
        canonical = parse_event(_revenue_record(ev))
        events[canonical.event_hash] = ev
        match_events.append(
            MatchEvent(
                canonical.event_hash,
                ev.source,
                ev.external_id,
                ev.kind,
                ev.amount_minor,
                ev.currency,
                # Its UTC day, as the warehouse takes it from the instant.
                (date.fromisoformat(canonical.occurred_at[:10]) - plan.start).days,
                canonical.occurred_at,
                ev.status,
            )
        )
    match_lines = [
        MatchLine(
            n,
            _GATEWAY[line.fmt],
            line.gateway_txn_id,
            line.kind,
            line.gross_minor,
            line.currency,
            line.day,
            (line.day, line.fmt, line.position),
        )
        for n, line in enumerate(lines)
    ]
    matched: dict[Any, tuple[str, str]] = {}  # line number -> (event hash, rule)
    for night in range(plan.days):
        taken = {event_hash for event_hash, _ in matched.values()}
        pairs = match_night(
            [e for e in match_events if e.event_hash not in taken],
            [ln for ln in match_lines if ln.key not in matched],
            night,
        )
        matched |= {ln: (e, rule) for e, ln, rule in pairs}
    for n, line in enumerate(lines):
        if n not in matched:
            if line.outcome is None:
                raise RuntimeError(
                    f"sample plan: {line.key} ({line.scenario}) is meant to match, "
                    "but the matching rules leave it open"
                )
            continue
        event_hash, rule = matched[n]
        ev = events[event_hash]
        if line.outcome is not None or line.event is not ev:
            raise RuntimeError(
                f"sample plan: the matching rules pair {line.key} ({line.scenario}) "
                f"with {ev.external_id}, not as the plan means ({line.outcome})"
            )
        if ev.settlement is not None and ev.settlement is not line:
            raise RuntimeError(
                f"sample plan: {ev.external_id} is meant as {ev.outcome} on "
                f"{ev.settlement.key}, but the matching rules pair it with {line.key}"
            )
        line.outcome = f"matched:{shown_rule(rule, line.batch_ref)}"
        ev.settlement, ev.outcome = line, line.outcome
    return plan


def _event_outcome(ev: _Event, run: int) -> str:
    line = ev.settlement
    landed = line is not None and run >= line.day
    return event_outcome(ev.outcome if landed else None, run - ev.day, ev.status)


def _expected(plan: _Plan, lines: list[_Line], bad_ids: list[str]) -> dict[str, Any]:
    days = [plan.day_text(d) for d in range(plan.days)]
    last = plan.days - 1
    events: dict[str, Any] = {}
    for ev in plan.events:
        if ev.settlement is not None and ev.settlement.day >= plan.days:
            ev.settlement, ev.outcome = None, None  # settles after the sample ends
        by_day = {plan.day_text(r): _event_outcome(ev, r) for r in range(ev.day, plan.days)}
        events[ev.external_id] = {
            "scenario": ev.scenario,
            "source": ev.source,
            "kind": ev.kind,
            "amount": format_minor(ev.amount_minor, ev.currency),
            "currency": ev.currency,
            "status": ev.status,
            "occurred_on": plan.day_text(ev.day),
            "settled_by": ev.settlement.key if ev.settlement else None,
            "outcome": by_day[plan.day_text(last)],
            "by_day": by_day,
        }
    line_map: dict[str, Any] = {}
    for line in lines:
        line_map[line.key] = {
            "scenario": line.scenario,
            "format": line.fmt,
            "gateway_txn_id": line.gateway_txn_id,
            "external_id": line.event.external_id if line.event else None,
            "kind": line.kind,
            "amount": format_minor(line.gross_minor, line.currency),
            "currency": line.currency,
            "settled_on": plan.day_text(line.day),
            "outcome": line.outcome,
            "by_day": {plan.day_text(r): line.outcome for r in range(line.day, plan.days)},
        }
    batches: dict[str, Any] = {}
    for batch in plan.batches:
        if batch.day >= plan.days:
            continue
        outcome = batch_outcome(batch.net_minor, batch.lines_net_minor)
        batches[batch.ref] = {
            "scenario": batch.scenario,
            "settled_on": plan.day_text(batch.day),
            "entry_amount": format_minor(batch.net_minor, "EUR"),
            "lines_net": format_minor(batch.lines_net_minor, "EUR"),
            "lines": [line.key for line in batch.lines],
            "outcome": outcome,
            "by_day": {plan.day_text(r): outcome for r in range(batch.day, plan.days)},
        }
    return {
        "assumptions": {
            "partition_timezone": "UTC",
            "runs": "one run per day, in order, after that day's files landed",
            "amount_tolerance_minor": 0,
            "match_window_days": MATCH_WINDOW_DAYS,
            "stale_after_days": STALE_AFTER_DAYS,
        },
        "scenarios": _scenarios(plan, events, line_map, batches, bad_ids),
        "events": events,
        "lines": line_map,
        "batches": batches,
        "rejected_rows": bad_ids,
        "by_day": {day: day_counts(day, events, line_map, batches) for day in days},
    }


def _scenarios(
    plan: _Plan,
    events: Mapping[str, Any],
    lines: Mapping[str, Any],
    batches: Mapping[str, Any],
    bad_ids: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, description in SCENARIOS.items():
        evs = {k: v["outcome"] for k, v in events.items() if v["scenario"] == name}
        lns = {k: v["outcome"] for k, v in lines.items() if v["scenario"] == name}
        bts = {k: v["outcome"] for k, v in batches.items() if v["scenario"] == name}
        entry: dict[str, Any] = {"description": description}
        if evs:
            entry["events"] = evs
        if lns:
            entry["lines"] = lns
        if bts:
            entry["batches"] = bts
        if name == "payoneer_bad_row":
            entry["rejected_rows"] = bad_ids
        out[name] = entry
    return out


# --------------------------------------------------------------------------- writing


def _folder(home: Path, fmt: str, day: str) -> Path:
    folder = home / "landing" / fmt / day
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _revenue_record(ev: _Event) -> dict[str, str]:
    return revenue_record(
        source=ev.source,
        external_id=ev.external_id,
        amount_minor=ev.amount_minor,
        currency=ev.currency,
        occurred_at=ev.at,
        kind=ev.kind,
        status=ev.status,
    )


def _write_revenue_csv(path: Path, records: Iterable[Mapping[str, str]]) -> None:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    path.write_text(out.getvalue(), encoding="utf-8")


def _write_revenue_jsonl(path: Path, records: Iterable[Mapping[str, str]]) -> None:
    text = "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")


def _write_stl(rows: list[dict[str, object]], day: str, path: Path, spoilt: bool) -> None:
    write_stl(
        path,
        rows,
        report_date=day,
        account_id=PAYPAL_ACCOUNT_NUMBER,
        corrupt="RF" if spoilt else None,
    )


def _write_statement(
    rows: list[dict[str, object]], options: dict[str, Any], path: Path, spoilt: bool
) -> None:
    write_camt053(path, rows, **options)
    if spoilt:  # cut short
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 3 // 5])


def _deliver(
    folder: Path,
    names: tuple[str, str],
    write: Callable[[Path, bool], None],
    refusal: tuple[str, str, str, str] | None,
    files: list[Path],
    broken: list[BrokenFile],
) -> None:
    """Writes a day's file as ``names[0]``. With ``refusal`` (format, day, error, reason) that
    first delivery is spoilt (``write(path, True)``) and a good resend follows as ``names[1]``."""
    path = folder / names[0]
    if refusal is not None:
        write(path, True)
        files.append(path)
        broken.append(BrokenFile(path, *refusal))
        path = folder / names[1]
    write(path, False)
    files.append(path)


def _paypal_info(ev: _Event) -> dict[str, Any]:
    refund = ev.kind == "refund"
    return transaction_info(
        at=ev.at,
        amount_minor=ev.amount_minor,
        currency=ev.currency,
        event_code="T1107" if refund else "T0006",
        status="S" if ev.status == "confirmed" else "P",
        transaction_id=ev.external_id,
        fee_minor=None if refund else -ev.fee_minor,
        reference_id=ev.reference_id,
        invoice_id=None if refund else f"INV-{ev.external_id[:8]}",
    )


def generate_sample(
    home: Path,
    sandbox_dir: Path,
    *,
    start: date = date(2026, 11, 16),
    days: int = 5,
    seed: int = 7,
) -> SampleManifest:
    """Writes the sample into ``home/landing`` and the sandbox; returns what it wrote and expects.

    Files land in the partition of the day their events occurred (revenue) or
    were settled (settlement files); settlements due after the last day are not
    written (their events are awaiting settlement). The PayPal transactions are
    appended to ``sandbox_dir/paypal_transactions.jsonl``: start from an empty
    sandbox directory for a clean sample.
    """
    if days < MIN_DAYS:
        raise ValueError(f"days must be at least {MIN_DAYS}, got {days}")
    plan = _plan(start, days, seed)
    home, sandbox_dir = Path(home), Path(sandbox_dir)
    files: list[Path] = []
    broken: list[BrokenFile] = []
    redelivered: list[Redelivery] = []
    rejected: list[RejectedRow] = []
    in_range = [line for line in plan.lines if line.day < days]
    by_day: dict[tuple[str, int], list[_Line]] = {}
    for line in in_range:
        by_day.setdefault((line.fmt, line.day), []).append(line)

    # PayPal API: the sandbox's data file, in time order.
    paypal = sorted((e for e in plan.events if e.source == "paypal"), key=lambda e: e.at)
    count = append_transactions(sandbox_dir, [_paypal_info(e) for e in paypal])

    for d in range(days):
        day, compact = plan.day_text(d), plan.compact(d)

        # Revenue files: Payoneer CSV (with the bad row on day 1), App Store JSONL.
        todays = sorted((e for e in plan.events if e.day == d), key=lambda e: (e.at, e.external_id))
        payoneer = [(e.at, _revenue_record(e)) for e in todays if e.source == "payoneer"]
        for bad_day, record in plan.bad_rows:
            if bad_day == d:
                payoneer.append((datetime.fromisoformat(record["occurred_at"]), record))
        payoneer.sort(key=lambda pair: (pair[0], pair[1]["external_id"]))
        path = _folder(home, "revenue", day) / f"payoneer-{day}.csv"
        _write_revenue_csv(path, [r for _, r in payoneer])
        files.append(path)
        for n, (_, record) in enumerate(payoneer, 1):
            if record["amount"] == "12.345":
                rejected.append(RejectedRow(path, n, record["external_id"], "has 3 decimals"))
        path = _folder(home, "revenue", day) / f"appstore-{day}.jsonl"
        _write_revenue_jsonl(path, [_revenue_record(e) for e in todays if e.source == "appstore"])
        files.append(path)

        # PayPal STL: on day 2 the first delivery's report footer is wrong; a resend follows.
        stl = by_day.get(("paypal-stl", d), [])
        if stl:
            ordered = sorted(stl, key=lambda x: x.occurred_at or "")
            first_line: dict[str | None, int] = {}
            for n, line in enumerate(ordered, 5):  # RH, FH, SH, CH, then the SB rows
                line.position = n
                if line.gateway_txn_id in first_line:
                    line.record_ref = f"{line.gateway_txn_id}#{n}"  # as the parser names it
                first_line.setdefault(line.gateway_txn_id, n)
            write = partial(_write_stl, [line.row(day) for line in ordered], day)
            footer = ("paypal-stl", day, "FooterMismatch", "report footer RF")
            names = (f"STL-{compact}.01.009.CSV", f"STL-{compact}.02.009.CSV")
            folder = _folder(home, "paypal-stl", day)
            _deliver(folder, names, write, footer if d == 2 else None, files, broken)

        # Payoneer settlement CSV; day 1's file is delivered again on day 3.
        pay = by_day.get(("settlement-csv", d), [])
        if pay:
            for n, line in enumerate(pay, 1):
                line.position = n
            path = _folder(home, "settlement-csv", day) / f"payoneer-settlement-{day}.csv"
            write_settlement_csv(path, [line.row(day) for line in pay], gateway="payoneer")
            files.append(path)
        if d == 3:
            original = home / "landing" / "settlement-csv" / plan.day_text(1)
            original = original / f"payoneer-settlement-{plan.day_text(1)}.csv"
            again = _folder(home, "settlement-csv", day) / f"payoneer-{plan.day_text(1)}-resend.csv"
            again.write_bytes(original.read_bytes())
            files.append(again)
            redelivered.append(Redelivery(again, original, "settlement-csv", day))

        # Bank statement (camt.053): on day 2 the first delivery is cut short; a resend follows.
        bank = by_day.get(("camt053", d), [])
        if bank:
            bank.sort(key=lambda x: (x.batch_ref is None, x.batch_ref or "", x.record_ref))
            for n, line in enumerate(bank, 1):
                line.position = n
            options: dict[str, Any] = {
                "statement_id": f"STMT-{ACCOUNT_IBAN[-6:]}-{compact}",
                "account_iban": ACCOUNT_IBAN,
                "currency": "EUR",
                "created_at": f"{day}T22:00:00+01:00",
                "version": "001.08",
                "charges_on_entry": {f"APPLE-{plan.compact(d - 2)}"} if d == 2 else set(),
            }
            write = partial(_write_statement, [line.row(day) for line in bank], options)
            cut = ("camt053", day, "MalformedFile", "is not well-formed XML")
            names = (f"camt053-{compact}-01.xml", f"camt053-{compact}-02.xml")
            folder = _folder(home, "camt053", day)
            _deliver(folder, names, write, cut if d == 2 else None, files, broken)

    bad_ids = [r.external_id for r in rejected]
    return SampleManifest(
        home=home,
        sandbox_dir=sandbox_dir,
        days=[plan.day_text(d) for d in range(days)],
        files=files,
        broken_files=broken,
        redelivered=redelivered,
        rejected_rows=rejected,
        sandbox_file=sandbox_dir / PAYPAL_TRANSACTIONS_FILE,
        paypal_transactions=count,
        expected=_expected(_apply_matching_rules(plan, in_range), in_range, bad_ids),
    )
