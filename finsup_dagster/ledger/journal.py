"""Double-entry journal: entries of postings that sum to zero per currency.

Postings are signed (debit positive, credit negative). Every balance in
finsup is a sum of postings; no table keeps a running balance.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger import clock
from finsup_dagster.ledger.errors import UnbalancedEntry
from finsup_dagster.ledger.money import exponent
from finsup_dagster.ledger.schema import journal_entries, postings


class Account:
    """The chart of accounts. Each account is kept per currency."""

    GATEWAY_CLEARING = "assets:gateway_clearing"  # money the gateways hold for us
    SALES = "income:sales"
    REFUNDS = "contra_income:refunds"
    CHARGEBACKS = "contra_income:chargebacks"
    GATEWAY_FEES = "expenses:gateway_fees"
    BENEFICIARY_PAYOUTS = "expenses:beneficiary_payouts"  # committed to beneficiaries
    PAYOUTS_PAYABLE = "liabilities:payouts_payable"  # committed, not yet paid out
    # Paid to a beneficiary from revenue reversed afterwards: owed back to us.
    CLAWBACK_RECEIVABLE = "assets:clawback_receivable"


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    currency: str
    amount_minor: int  # debit > 0, credit < 0


def debit_credit(debit: str, credit: str, currency: str, amount_minor: int) -> list[Posting]:
    """The two postings that move ``amount_minor`` from ``credit`` to ``debit``."""
    return [Posting(debit, currency, amount_minor), Posting(credit, currency, -amount_minor)]


def check_balanced(lines: Iterable[Posting]) -> list[Posting]:
    lines = list(lines)
    if not lines:
        raise UnbalancedEntry("a journal entry needs at least two postings")
    totals: dict[str, int] = defaultdict(int)
    for p in lines:
        if isinstance(p.amount_minor, bool) or not isinstance(p.amount_minor, int):
            raise UnbalancedEntry(f"posting amount {p.amount_minor!r} is not integer minor units")
        exponent(p.currency)
        totals[p.currency] += p.amount_minor
    off = {c: t for c, t in totals.items() if t != 0}
    if off:
        detail = ", ".join(f"{c} off by {t}" for c, t in sorted(off.items()))
        raise UnbalancedEntry(f"journal entry does not balance: {detail}")
    return lines


def post_entry(
    conn: Connection,
    kind: str,
    description: str,
    lines: Iterable[Posting],
    reference: tuple[str, str] | None = None,
) -> int:
    """Writes one balanced entry in the caller's transaction; returns its id."""
    checked = check_balanced(lines)
    entry_id: int = conn.execute(
        sa.insert(journal_entries)
        .values(
            posted_at=clock.now(),
            kind=kind,
            description=description,
            reference_type=reference[0] if reference else None,
            reference_id=reference[1] if reference else None,
        )
        .returning(journal_entries.c.id)
    ).scalar_one()
    conn.execute(
        sa.insert(postings),
        [
            {
                "entry_id": entry_id,
                "account": p.account,
                "currency": p.currency,
                "amount_minor": p.amount_minor,
            }
            for p in checked
        ],
    )
    return int(entry_id)


def account_balances(conn: Connection) -> dict[tuple[str, str], int]:
    """Sum of postings per (account, currency)."""
    rows: Iterable[tuple[str, str, Any]] = conn.execute(
        sa.select(
            postings.c.account, postings.c.currency, sa.func.sum(postings.c.amount_minor)
        ).group_by(postings.c.account, postings.c.currency)
    )
    return {(a, c): int(total) for a, c, total in rows}


@dataclass(frozen=True)
class UnbalancedReport:
    entry_id: int | None
    currency: str
    off_by_minor: int


def unbalanced_entries(conn: Connection, limit: int = 20) -> list[UnbalancedReport]:
    """Entries whose postings do not sum to zero, and whole-journal imbalances."""
    per_entry: Sequence[tuple[int, str, Any]] = conn.execute(
        sa.select(postings.c.entry_id, postings.c.currency, sa.func.sum(postings.c.amount_minor))
        .group_by(postings.c.entry_id, postings.c.currency)
        .having(sa.func.sum(postings.c.amount_minor) != 0)
        .limit(limit)
    ).all()
    return [UnbalancedReport(int(e), c, int(t)) for e, c, t in per_entry]


def totals_by_currency(balances: Mapping[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for (_, currency), amount in balances.items():
        out[currency] += amount
    return dict(out)
