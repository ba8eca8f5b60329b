"""Available balance per currency, derived from postings only.

available = confirmed sales
          − confirmed refunds, chargebacks and fees
          − the reserve set for the currency
          − everything committed to payouts (pending approval, approved,
            submitted, paid; released again when an item fails, is returned
            or is cancelled)
          − clawbacks receivable (paid out of revenue later reversed: owed
            back to us, but not money in hand until netted from a payout)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from finsup_dagster.ledger.journal import Account, account_balances
from finsup_dagster.ledger.schema import balance_reserves

_DEDUCTIONS = (Account.REFUNDS, Account.CHARGEBACKS, Account.GATEWAY_FEES)


@dataclass(frozen=True)
class Balance:
    currency: str
    available_minor: int
    confirmed_revenue_minor: int
    deductions_minor: int
    reserve_minor: int
    committed_minor: int
    clawback_receivable_minor: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def reserves(conn: Connection) -> dict[str, int]:
    rows: Iterable[tuple[str, int]] = conn.execute(
        sa.select(balance_reserves.c.currency, balance_reserves.c.amount_minor)
    )
    return {c: int(a) for c, a in rows}


def available_balances(conn: Connection, currency: str | None = None) -> list[Balance]:
    sums = account_balances(conn)
    held = reserves(conn)
    currencies = sorted({c for _, c in sums} | set(held))
    if currency is not None:
        currencies = [c for c in currencies if c == currency] or [currency]
    out = []
    for cur in currencies:
        revenue = -sums.get((Account.SALES, cur), 0)
        deductions = sum(sums.get((a, cur), 0) for a in _DEDUCTIONS)
        committed = sums.get((Account.BENEFICIARY_PAYOUTS, cur), 0)
        reserve = held.get(cur, 0)
        receivable = sums.get((Account.CLAWBACK_RECEIVABLE, cur), 0)
        out.append(
            Balance(
                currency=cur,
                available_minor=revenue - deductions - reserve - committed - receivable,
                confirmed_revenue_minor=revenue,
                deductions_minor=deductions,
                reserve_minor=reserve,
                committed_minor=committed,
                clawback_receivable_minor=receivable,
            )
        )
    return out


def available_minor(conn: Connection, currency: str) -> int:
    return available_balances(conn, currency)[0].available_minor
